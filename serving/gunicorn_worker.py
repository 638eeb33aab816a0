"""gunicorn's threaded worker, taking inference requests only while it has room to serve them.

Every worker listens on two sockets (serving/nginx.py): nginx sends POST /invocations to the work
socket and everything else (/ping, /metrics, /execution-parameters) to the control socket. A worker
accepts from the work socket only while it serves fewer than `requests_per_worker` requests; the
others wait in the kernel's queue of that socket, which every worker shares, so they are served in
arrival order by whichever worker frees up first (gthread alone accepts up to
`worker_connections`, 1,000, into its own thread pool's queue: one worker could hold everything
while another idled). The control socket is always accepted from, and two threads are kept for
it, so /ping never waits behind inference. How many may wait, and the cheap 503 past that, is
nginx's (`limit_conn`).

It extends gunicorn 27's gthread worker through four of its methods (`accept`, `enqueue_req`,
`finish_request`, `set_accept_enabled`), all called on the worker's main thread: gunicorn is
pinned, and tests/process/test_process_overload.py fails if they stop being called.
"""

from __future__ import annotations

import os
import selectors

from gunicorn.workers.gthread import ThreadWorker

from serving.nginx import work_socket_path
from serving.settings import Settings

# Threads beyond the inference ones: /ping and the other control routes always find one.
CONTROL_THREADS = 2


class AdmittingWorker(ThreadWorker):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.work_address = str(work_socket_path(Settings.load(os.environ)))
        self.work_limit = max(1, self.cfg.threads - CONTROL_THREADS)
        self.work_held = 0  # inference requests on this worker's threads
        self.work_paused = False  # the work socket is off the poller: no room here

    def _is_work(self, address) -> bool:
        return address == self.work_address

    def _listen(self, listener) -> None:
        listener.setblocking(False)
        self.poller.register(listener, selectors.EVENT_READ, self.accept)

    def _resume_work(self) -> None:
        """The work socket back on the poller once this worker has room again."""
        if self.work_paused and self._accepting and self.work_held < self.work_limit:
            self.work_paused = False
            self._listen(next(s for s in self.sockets if self._is_work(s.getsockname())))

    def set_accept_enabled(self, enabled):
        if enabled == self._accepting:
            return
        for listener in self.sockets:
            if self._is_work(listener.getsockname()) and self.work_paused:
                continue  # already off the poller: _resume_work puts it back
            if enabled:
                self._listen(listener)
            else:
                self.poller.unregister(listener)
        self._accepting = enabled
        self._resume_work()

    def accept(self, listener):
        if self._is_work(listener.getsockname()) and self.work_held >= self.work_limit:
            # Full: leave the connection to another worker (or to the queue) and stop polling the
            # socket until one of ours ends; polling it meanwhile would spin.
            self.poller.unregister(listener)
            self.work_paused = True
            return
        super().accept(listener)

    def enqueue_req(self, conn):
        if self._is_work(conn.server):
            self.work_held += 1
        super().enqueue_req(conn)

    def finish_request(self, conn, fs):
        try:
            super().finish_request(conn, fs)
        finally:
            if self._is_work(conn.server):
                self.work_held -= 1
                self._resume_work()
