"""Runs the controller: gRPC listeners, the HTTP API and the liveness watch, in one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from controller import web
from controller.core import Controller, ControllerConfig
from controller.notify.worker import prepare_worker
from controller.rest.app import create_app
from controller.rpc.service import AgentChannelService, start_grpc
from controller.web.stats import take_snapshot_if_due

log = logging.getLogger(__name__)


@dataclass
class Running:
    controller: Controller
    grpc_port: int
    enroll_port: int
    http_host: str
    http_port: int

    @property
    def url(self) -> str:
        return f"http://{self.http_host}:{self.http_port}"


def _split(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def build_app(ctl: Controller) -> FastAPI:
    """The controller's HTTP app: the REST API under /api/v1 and the web UI beside it."""
    app = create_app(ctl)
    web.register(app, ctl)
    return app


def wire_agent_channel(ctl: Controller, channel: AgentChannelService) -> None:
    """Give the domain its ways to reach connected agents: revocation closes the agent's stream, sweeps
    send RUN_CHECKS, metrics count the streams. Called from threads other than the channel's loop."""
    loop = asyncio.get_running_loop()

    def dispatch(agent_ids: Sequence[str] | None, check_ids: Sequence[str]) -> list[str]:
        async def send() -> list[str]:
            return channel.run_checks(None if agent_ids is None else list(agent_ids), list(check_ids))

        return asyncio.run_coroutine_threadsafe(send(), loop).result(timeout=10)

    ctl.on_agent_revoked.append(channel.disconnect)
    ctl.sweeps.dispatch = dispatch
    ctl.agent_streams = lambda: len(channel.streams)


def _housekeeping(ctl: Controller) -> dict[str, object]:
    done = ctl.housekeeping()
    with ctl.sessions.begin() as s:
        # The dashboard's trend charts (one point every ten minutes).
        take_snapshot_if_due(s, dt.datetime.now(dt.UTC))
    return done


async def serve(
    config: ControllerConfig,
    on_ready: Callable[[Running], None] | None = None,
    stop: asyncio.Event | None = None,
    notify_config: Path | None = None,
) -> None:
    ctl = Controller.open(config)
    # Notifications (docs/notifications.md): a broken notifications.yaml stops start-up before we listen.
    notifier = prepare_worker(ctl, notify_config)
    server, channel, grpc_port, enroll_port = await start_grpc(ctl)
    host, port = _split(config.http_addr)
    wire_agent_channel(ctl, channel)
    app = build_app(ctl)
    uv = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off",
                                       access_log=False))
    # The controller handles SIGINT/SIGTERM itself and stops uvicorn in order.
    uv.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    http_task = asyncio.create_task(uv.serve())
    while not uv.started:
        if http_task.done():
            await http_task
            raise OSError(f"cannot listen on {config.http_addr}")
        await asyncio.sleep(0.01)
    http_port = uv.servers[0].sockets[0].getsockname()[1] if port == 0 else port
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)

    async def liveness() -> None:
        while True:
            await asyncio.sleep(config.liveness_every_s)
            try:
                changed = await ctl.db(ctl.check_liveness)
                if any(changed.values()):
                    log.info("liveness: %s", changed)
                done = await ctl.db(_housekeeping, ctl)
                if any(done.values()):
                    log.info("housekeeping: %s", done)
                # Another replica (or the CLI) may have changed baselines: push if the policy differs.
                await channel.push_policies()
            except Exception:
                log.exception("liveness check failed")

    live_task = asyncio.create_task(liveness())
    notifier.start()
    running = Running(ctl, grpc_port, enroll_port, host, http_port)
    log.info("controller ready: agents on port %d, enrollment on port %d, web %s", grpc_port, enroll_port,
             running.url)
    if on_ready:
        on_ready(running)
    try:
        await stop.wait()
    finally:
        live_task.cancel()
        await notifier.stop()
        uv.should_exit = True
        channel.close_all()
        await server.stop(grace=2)
        with contextlib.suppress(Exception):
            await http_task
        ctl.writer.shutdown(wait=True)
        # Every writer has stopped: the WAL goes into controller.db, which alone then holds everything.
        ctl.close()
