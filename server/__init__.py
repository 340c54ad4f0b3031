"""The rumor node: where `crdt/` and `gossip/` meet, behind an HTTP API and a command line.

Layering, from the data up (each module is one concept):

- `values`, `updates`: the API's JSON data model and typed updates, mapped to crdt's types; checked once, here.
- `keyspace`: key -> CRDT state (on disk, memory as a cache), with the rendered read cached per key and change
  listeners; `state_cache` (what stays decoded in memory), `disk_index` (reads of the states table), `state_writes`
  (raw state writes that tell the keyspace and the hash tree).
- `storage`, `data_dir_lock`: the durable delta log and checkpointed states in SQLite, written by group commit,
  in a data directory one process holds at a time.
- `hlc_source`, `consistency`: the node's hybrid logical clock; the ``w``/``r`` levels and what each one needs.
- `node`: `Node`, the embeddable runtime (keyspace + storage + HLC + replication), usable without HTTP.
- `replication/`: how nodes exchange deltas and repair each other (`server.replication` says more).
- `cluster`: the gossip side of a served node, built from `config` (transport, membership, keys, timing presets).
- `http_request`, `http_api`, `http_errors`, `http_server`, `negotiation`: the HTTP edge.
- `serve`, `cli`, `client`, `demo`, `local_cluster`: running nodes and talking to them.
- `supervisor`, `metrics`, `errors`: background work that cannot die silently, Prometheus text, the error tree.

`server/` may import `crdt/` and `gossip/`; neither imports it.
"""
