"""The sandbox's speech recognition runs in a worker process, so the server keeps serving.

pocketsphinx holds the GIL while it decodes; in a thread it would freeze every other socket and
call of the process for about a second per utterance.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

import pytest

from gateway.sandbox import speech
from gateway.vendors import sandbox
from gateway.vendors.base import VendorError
from gateway.vendors.sandbox import SANDBOX_CREDENTIAL, Sandbox


@pytest.fixture(scope="module")
def spoken() -> bytes:
    return speech.synthesize("what is the weather today", None, 1.0, "wav").audio


async def ticks_while(coro, interval: float = 0.02) -> tuple[object, int]:
    """Run `coro` and count how often a 20 ms timer got to run on the event loop meanwhile."""
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            await asyncio.sleep(interval)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        result = await coro
    finally:
        done.set()
        await task
    return result, ticks


async def test_recognition_happens_in_another_process_and_the_loop_keeps_turning(spoken, settings):
    settings.SANDBOX_ASR_PROCESSES = 1
    vendor = Sandbox()
    await vendor.asr("sandbox-asr", spoken, "audio/wav", "en", SANDBOX_CREDENTIAL)  # starts the worker
    worker_pids = {pid for pid in sandbox._asr_processes()._processes}  # noqa: SLF001
    assert worker_pids and os.getpid() not in worker_pids

    started = asyncio.get_running_loop().time()
    transcript, ticks = await ticks_while(vendor.asr("sandbox-asr", spoken, "audio/wav", "en", SANDBOX_CREDENTIAL))
    elapsed = asyncio.get_running_loop().time() - started
    assert transcript.text.strip()  # recognised there, answered here
    # Blocked by the GIL the timer would barely run; here it runs for most of the decode.
    assert ticks >= (elapsed / 0.02) * 0.3, f"{ticks} ticks in {elapsed:.2f} s"


async def test_bad_audio_is_still_a_clear_400_from_the_worker(settings):
    settings.SANDBOX_ASR_PROCESSES = 1
    with pytest.raises(VendorError) as refused:
        await Sandbox().asr("sandbox-asr", b"not audio at all", "audio/wav", "en", SANDBOX_CREDENTIAL)
    assert refused.value.status == 400


def test_a_recognition_worker_ends_when_its_server_is_killed(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    script = (
        "import os, sys\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "import multiprocessing\n"
        "from gateway.sandbox.speech import die_with_parent\n"
        "pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context('spawn'), initializer=die_with_parent)\n"
        "print(pool.submit(os.getpid).result(), flush=True)\n"
        "sys.stdin.read()\n"
    )
    server = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=os.getcwd()
    )
    worker = int(server.stdout.readline())
    server.send_signal(signal.SIGKILL)
    server.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(worker, os.WNOHANG)
        time.sleep(0.05)
    pytest.fail(f"the worker {worker} outlived its killed server")


def test_the_worker_outlives_the_thread_whose_event_loop_started_it(spoken, settings, monkeypatch):
    # Django's test client and async_to_sync run each request's loop in a thread that then ends.
    import threading

    settings.SANDBOX_ASR_PROCESSES = 1
    monkeypatch.setattr(sandbox, "_asr_pool", None)  # the first request's thread starts the worker
    heard: list[str] = []

    def one_request() -> None:
        transcript = asyncio.run(Sandbox().asr("sandbox-asr", spoken, "audio/wav", "en", SANDBOX_CREDENTIAL))
        heard.append(transcript.text)

    for _ in range(2):
        thread = threading.Thread(target=one_request)
        thread.start()
        thread.join(60)
    assert len(heard) == 2 and all(text.strip() for text in heard)
