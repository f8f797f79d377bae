"""A local Ray instance owned by this helper process, for the Ray backend tests (run: ``python -m tests.ray_head``).

It starts Ray (2 CPUs, small object store, no dashboard), prints ``address HOST:PORT`` (the GCS address that
``fl-async run --ray-address`` joins) and then serves one command per stdin line, answering one line each:

* ``kill NAME``: ``ray.kill`` the named actor (searched in every namespace) -> ``killed NAME`` or
  ``missing NAME``;
* ``actors``: the named actors alive -> ``actors NAME,NAME,...``.

At end of input it shuts Ray down and exits. Keeping Ray out of the pytest process keeps its signal handlers,
threads and loggers out of the other tests.
"""

from __future__ import annotations

import logging
import sys


def main() -> None:
    import ray

    ray.init(
        address="local",
        num_cpus=2,
        object_store_memory=96 * 2**20,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
    )
    print(f"address {ray.get_runtime_context().gcs_address}", flush=True)
    for line in sys.stdin:
        command, _, arg = line.strip().partition(" ")
        if command == "kill":
            found = [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"] == arg]
            for actor in found:
                ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=True)
            print(f"{'killed' if found else 'missing'} {arg}", flush=True)
        elif command == "actors":
            names = sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True))
            print(f"actors {','.join(names)}", flush=True)
        else:
            print(f"unknown {command}", flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
