"""The dask.distributed cluster a block-wise job runs on: an existing one, or a local one.

``scheduler="local"`` starts a ``LocalCluster`` of worker *processes* (one thread each; torch
inside each worker uses ``cores / workers`` threads), which goes away with the job; any other
string is the address of a running scheduler (``tcp://host:8786``, as printed by
``dask scheduler``), whose workers must see the input's file system. A scheduler that cannot be
reached is reported within ``timeout`` seconds.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

__all__ = ["CONNECT_TIMEOUT", "connect"]

#: Seconds to wait for a scheduler before giving up.
CONNECT_TIMEOUT = 5.0


@contextlib.contextmanager
def connect(scheduler: str, *, workers: int | None = None, timeout: float = CONNECT_TIMEOUT) -> Iterator[Any]:
    """A ``distributed.Client`` for ``scheduler`` (``"local"`` or an address), closed after.

    Raises
    ------
    ConnectionError
        The scheduler cannot be reached within ``timeout`` seconds.
    ValueError
        ``workers`` given with an address (the cluster's workers are its own), or below 1.
    """
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ImportError(
            "a dask cluster needs the distributed package: pip install 'napari-unet[cluster]'"
        ) from None
    if scheduler == "local":
        n = 2 if workers is None else int(workers)
        if n < 1:
            raise ValueError(f"--workers must be at least 1, not {workers}")
        threads = max(1, (os.cpu_count() or 1) // n)
        previous = os.environ.get("NAPARI_UNET_WORKER_THREADS")
        os.environ["NAPARI_UNET_WORKER_THREADS"] = str(threads)  # inherited by the workers
        try:
            with (
                LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                             dashboard_address=":0", silence_logs=40) as cluster,
                Client(cluster) as client,
            ):
                yield client
        finally:
            if previous is None:
                os.environ.pop("NAPARI_UNET_WORKER_THREADS", None)
            else:
                os.environ["NAPARI_UNET_WORKER_THREADS"] = previous
        return
    if workers is not None:
        raise ValueError("--workers starts a local cluster; an existing cluster brings its own workers")
    _check_scheduler(scheduler, timeout)
    try:
        client = Client(scheduler, timeout=f"{timeout}s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise ConnectionError(
            f"cannot reach the dask scheduler at {scheduler} within {timeout:g} s "
            f"({type(exc).__name__})"
        ) from None
    try:
        yield client
    finally:
        client.close()


def _check_scheduler(address: str, timeout: float) -> None:
    """Ask ``address`` who it is, within ``timeout`` seconds in all, before a ``Client`` is made.

    ``Client``'s timeout covers the connection only: a port that accepts connections but is not
    a dask scheduler (the dashboard's 8787, any web server) made it wait forever, or read an
    answer in another protocol as a frame of exabytes. Raises ``ConnectionError``.
    """
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from distributed.comm import connect as comm_connect
    from distributed.security import Security

    async def identity() -> Any:
        comm = await comm_connect(
            address, timeout=timeout, **Security().get_connection_args("client")
        )
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    async def bounded() -> Any:
        return await asyncio.wait_for(identity(), timeout)

    with ThreadPoolExecutor(1) as pool:  # its own event loop, also under a running one
        try:
            reply = pool.submit(asyncio.run, bounded()).result()
        except (OSError, TimeoutError, ValueError) as exc:  # also: accepted, then silent
            raise ConnectionError(
                f"cannot reach the dask scheduler at {address} within {timeout:g} s "
                f"({type(exc).__name__})"
            ) from None
        except Exception:
            reply = None  # an answer that is no dask message (e.g. a frame of exabytes)
    kind = reply.get("type") if isinstance(reply, dict) else None
    if kind != "Scheduler":
        what = f"it answers as a dask {kind.lower()}" if isinstance(kind, str) else "no answer in dask's protocol"
        raise ConnectionError(
            f"{address} is not a dask scheduler ({what}); give the address `dask scheduler` "
            "prints (tcp://host:8786, not the dashboard's port)"
        )
