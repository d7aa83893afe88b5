"""Micro-batching: requests that arrive within a short window run as one batch, off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")


@dataclass
class _Waiting(Generic[Item]):
    item: Item
    future: asyncio.Future = field(repr=False)


class MicroBatcher(Generic[Item]):
    """Collects items submitted concurrently and hands them to ``run`` as one list, in a worker thread.

    A batch closes when it holds ``max_batch`` items or ``max_wait`` seconds after its first item
    arrived; while ``run`` works on one batch the next one gathers, so under load batches fill up
    and throughput grows with concurrency. ``run`` returns one result per item, in order; an
    exception in the list fails only its own item. One batch runs at a time (the model's threads
    work on it), and the event loop stays free to accept and parse requests meanwhile.
    """

    def __init__(self, run: Callable[[list[Item]], list[Any]], max_batch: int, max_wait: float,
                 observe: Callable[[int], None] | None = None):
        self.run, self.max_batch, self.max_wait, self.observe = run, max_batch, max_wait, observe
        self._queue: asyncio.Queue[_Waiting[Item]] | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        """Start the loop that forms batches (on the running event loop)."""
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="polyalign-model")
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Stop forming batches; items still waiting fail with an error saying the server stopped."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        while self._queue is not None and not self._queue.empty():
            waiting = self._queue.get_nowait()
            if not waiting.future.done():
                waiting.future.set_exception(RuntimeError("the server is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def submit(self, item: Item) -> Any:
        """The result of ``item`` once the batch holding it has run (its exception, if it failed)."""
        if self._queue is None:
            raise RuntimeError("the batcher is not started")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Waiting(item, future))
        return await future

    async def _gather(self) -> list[_Waiting[Item]]:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        batch = [await self._queue.get()]
        deadline = loop.time() + self.max_wait
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), left))
            except asyncio.TimeoutError:
                break
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            if self.observe is not None:
                self.observe(len(batch))
            try:
                results = await loop.run_in_executor(self._executor, self.run, [w.item for w in batch])
            except Exception as exc:  # noqa: BLE001 - run failed as a whole: every item gets its error
                results = [exc] * len(batch)
            for waiting, result in zip(batch, results):
                if waiting.future.done():  # the client went away
                    continue
                if isinstance(result, BaseException):
                    waiting.future.set_exception(result)
                else:
                    waiting.future.set_result(result)
