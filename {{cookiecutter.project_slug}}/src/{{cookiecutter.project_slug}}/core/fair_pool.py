"""SQLAlchemy's asyncio pool, serving the tasks that wait for a connection in arrival order.

The stock pool waits on an `asyncio.Queue`. A connection given back wakes the first waiter
but stays in the queue until that waiter runs; a task asking in the meantime (typically the
one that just gave it back, on to its next request) takes it, and the woken waiter queues
again at the back. Under load beyond the pool some waiters lose every round. Here a
connection given back goes straight to the longest waiter, and nobody takes one while others
wait.
"""

import asyncio
import logging
from collections import deque
from typing import Any

from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry
from sqlalchemy.util import await_only
from sqlalchemy.util.queue import AsyncAdaptedQueue, Empty


class FairQueue(AsyncAdaptedQueue[ConnectionPoolEntry]):
    """The pool's queue of idle connections, handing each one given back to the first task
    still waiting (first come, first served)."""

    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        super().__init__(maxsize, use_lifo)
        self.waiters: deque[asyncio.Future[ConnectionPoolEntry]] = deque()

    def waiting(self) -> bool:
        """Whether a task is waiting (ones cancelled or timed out are dropped first)."""
        while self.waiters and self.waiters[0].done():
            self.waiters.popleft()
        return bool(self.waiters)

    def put_nowait(self, item: ConnectionPoolEntry) -> None:
        if self.waiting():
            self.waiters.popleft().set_result(item)
        else:
            super().put_nowait(item)

    def put(
        self, item: ConnectionPoolEntry, block: bool = True, timeout: float | None = None
    ) -> None:
        self.put_nowait(item)  # the pool never blocks to give a connection back

    def get(self, block: bool = True, timeout: float | None = None) -> ConnectionPoolEntry:
        if not self.waiting():  # nobody ahead: an idle connection, if there is one
            try:
                return self.get_nowait()
            except Empty:
                pass
        if not block:
            raise Empty()  # the pool then opens a connection, if it may, or waits
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        result: ConnectionPoolEntry = await_only(self.wait(waiter, seconds=timeout))
        return result

    async def wait(
        self, waiter: asyncio.Future[ConnectionPoolEntry], seconds: float | None
    ) -> ConnectionPoolEntry:
        """`waiter`'s connection; Empty after `seconds` (None: no limit). A waiter that gives up (a
        timeout, a cancellation) just as a connection was handed to it passes it on."""
        try:
            async with asyncio.timeout(seconds):
                return await waiter
        except BaseException as error:
            if waiter.done() and not waiter.cancelled():
                self.put_nowait(waiter.result())  # to the next waiter, or back to the queue
            elif waiter in self.waiters:
                self.waiters.remove(waiter)
            if isinstance(error, TimeoutError):
                raise Empty() from None  # the pool raises its own TimeoutError for it
            raise


# The pool's INFO lines (every dispose, every reconnect): SQLAlchemy keeps its own pools' off
# (its `sqlalchemy` logger at WARNING); this pool logs under our package: off too.
logging.getLogger(__name__).setLevel(logging.WARNING)


class FairQueuePool(AsyncAdaptedQueuePool):
    """`AsyncAdaptedQueuePool` with a `FairQueue`: the same sizes, timeout and errors."""

    _queue_class: Any = FairQueue
