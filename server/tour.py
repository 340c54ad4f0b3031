"""A short, runnable tour of the embedded CRDT library: two replicas diverge, exchange deltas and converge."""


def main() -> None:
    print("rumor: the CRDT library tour arrives with crdt/; the multi-node demo with server/.")


if __name__ == "__main__":
    main()
