from cli.app import main

# guarded: a Dask LocalCluster's workers are spawned processes, which import the main module again
if __name__ == "__main__":
    raise SystemExit(main())
