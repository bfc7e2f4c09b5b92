"""The tracker's HTTP(S) listener (trio): announce and scrape answered inline, other paths handed to the Starlette app.

Over TLS a client may show a node certificate (standard BitTorrent clients show none); one the
handshake verified under ``node_ca`` is admitted once per connection (tracker/node_auth.py), and
every announce and /caches request on that connection is placed by it.
"""

from __future__ import annotations

import resource
import ssl
from collections.abc import Callable
from urllib.parse import unquote

import trio

from posswarm import logs
from posswarm.identity.certificate import CertifiedNode, IdentityError
from tracker import announce, http_wire
from tracker.connections import ConnectionTable
from tracker.desk import Desk
from tracker.metrics import TrackerMetrics
from tracker.node_auth import NodeAuthority

BENCODE = "text/plain"  # what BEP 3 trackers have always sent; clients ignore it
log = logs.get("tracker")


class Client:
    """Who is at the other end of one connection: a certified node, a refused certificate, or nobody in particular."""

    __slots__ = ("node", "refusal", "nodes")

    def __init__(self, node: CertifiedNode | None = None, refusal: str | None = None,
                 nodes: NodeAuthority | None = None) -> None:
        self.node, self.refusal, self.nodes = node, refusal, nodes

    def certified(self) -> CertifiedNode | None:
        """The node, if any; BadRequest when the client showed a certificate the tracker does not admit (or no
        longer: revoked since the handshake)."""
        if self.refusal is not None:
            raise announce.BadRequest(self.refusal)
        if self.node is not None and self.nodes is not None:
            try:
                self.nodes.still_admitted(self.node)
            except IdentityError as exc:
                self.refusal = str(exc)
                raise announce.BadRequest(self.refusal) from None
        return self.node


ANYONE = Client()


def announce_body(desk: Desk, metrics: TrackerMetrics, path: str, query: bytes, remote: str | None, now: float,
                  client: Client = ANYONE) -> bytes:
    """The bencoded answer to ``GET path?query`` on /announce[/<passkey>]: peers, or a failure reason."""
    config = desk.config
    try:
        passkey = announce.passkey_of(path)
        a = announce.parse_announce(query, remote, max_query=config.max_query, max_numwant=config.max_numwant)
        answer = desk.announce(a, passkey, now, client.certified())
    except announce.BadRequest as exc:
        # A guesser's refusals are counted, not logged one by one (the node refused logs it on its side).
        (log.debug if isinstance(exc, announce.Denied) else log.info)("announce.bad", reason=str(exc), remote=remote)
        metrics.count("http", "announce", ok=False)
        return announce.encode_failure(str(exc))
    metrics.count("http", "announce", ok=True)
    return announce.encode_announce(
        interval=answer.interval,
        min_interval=answer.min_interval,
        complete=answer.complete,
        incomplete=answer.incomplete,
        peers=() if a.compact else answer.peers,
        compact=a.compact,
        packed=answer.handed.compact() if a.compact else None,
    )


def caches_body(desk: Desk, metrics: TrackerMetrics, path: str, query: bytes, remote: str, now: float,
                client: Client = ANYONE) -> bytes:
    """The bencoded answer on /caches[/<passkey>]: where the asking store's caches serve their catalog."""
    try:
        passkey = announce.passkey_of(path)
        store = announce.first_values(query, max_query=desk.config.max_query).get("store")
        caches = desk.store_caches(passkey, store.decode("utf-8", "replace") if store else None, remote, now,
                                   client.certified())
    except announce.BadRequest as exc:
        (log.debug if isinstance(exc, announce.Denied) else log.info)("caches.bad", reason=str(exc), remote=remote)
        metrics.count("http", "caches", ok=False)
        return announce.encode_failure(str(exc))
    metrics.count("http", "caches", ok=True)
    return announce.encode_caches(caches, desk.config.interval)


def scrape_body(desk: Desk, metrics: TrackerMetrics, path: str, query: bytes, remote: str, now: float,
                client: Client = ANYONE) -> bytes:
    """The bencoded answer on /scrape[/<passkey>] (BEP 48)."""
    try:
        passkey = announce.passkey_of(path)
        files = desk.scrape(announce.parse_scrape(query, max_query=desk.config.max_query), passkey, now, remote,
                            client.certified())
    except announce.BadRequest as exc:
        (log.debug if isinstance(exc, announce.Denied) else log.info)("scrape.bad", reason=str(exc), remote=remote)
        metrics.count("http", "scrape", ok=False)
        return announce.encode_failure(str(exc))
    metrics.count("http", "scrape", ok=True)
    return announce.encode_scrape(files)


async def run(
    desk: Desk,
    app,
    host: str,
    port: int,
    clock: Callable[[], float],
    metrics: TrackerMetrics,
    *,
    tls: ssl.SSLContext | None = None,
    nodes: NodeAuthority | None = None,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; ``task_status.started(url)`` once listening (port 0 = the kernel's choice).

    ``tls`` = serve HTTPS with it; ``nodes`` = admit the client certificates it verified as nodes."""
    slots = _room_for(desk.config.max_connections)  # a full table evicts; out of files, accept() would just fail
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound_host, bound_port = listeners[0].socket.getsockname()[:2]
    scheme = "https" if tls is not None else "http"
    url = f"{scheme}://[{bound_host}]:{bound_port}" if ":" in bound_host else f"{scheme}://{bound_host}:{bound_port}"
    config = desk.config
    table = ConnectionTable(slots, config.max_connections_per_address)
    short_of_files = [slots < config.max_connections]  # said once, when it first matters

    async def connection(stream: trio.SocketStream) -> None:
        try:
            peer = stream.socket.getpeername()
        except OSError:
            await stream.aclose()
            return
        scope = trio.CancelScope()
        admitted, evicted = table.admit(scope, peer[0])
        if (evicted is not None or not admitted) and short_of_files[0] and len(table) >= slots:
            short_of_files[0] = False
            log.warning("tracker.open_files", reason=f"max_connections = {config.max_connections} but the open-files "
                        f"limit holds {slots}: kept connections are closed for new ones (raise LimitNOFILE / ulimit -n)")
        if evicted is not None:
            evicted.cancel()  # the longest wait for a request head gives up its slot
        if not admitted:
            metrics.refused_connection()
            await stream.aclose()  # full: the client retries, as after any failed announce
            return
        try:
            with scope:
                client, served = ANYONE, stream
                if tls is not None:
                    served = trio.SSLStream(stream, tls, server_side=True)
                    client = await _handshake(served, nodes, clock, desk.config.header_timeout)
                    metrics.handshake(client is not None)
                    if client is None:
                        return
                await _serve_connection(served, peer, client, desk, app, clock, metrics, (bound_host, bound_port),
                                        table, scope, scheme)
        finally:
            table.close(scope)
            await stream.aclose()

    task_status.started(url)
    await trio.serve_listeners(connection, listeners)


OWN_FILES = 256  # the listeners, the log, the catalog and redis clients


def _room_for(connections: int) -> int:
    """Raise the soft open-files limit so ``connections`` fit (most systems start a process at 1,024), up to the hard
    limit; the connections that fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = connections + OWN_FILES
    if soft == resource.RLIM_INFINITY or soft >= want:
        return connections
    raised = want if hard == resource.RLIM_INFINITY else min(want, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
    return max(1, raised - OWN_FILES)


async def _handshake(stream: trio.SSLStream, nodes: NodeAuthority | None, clock: Callable[[], float],
                     timeout: float) -> Client | None:
    """Who the client is once the TLS handshake is done, or None when it failed or dawdled (the connection is dropped).

    A certificate not under ``node_ca`` fails the handshake itself (OpenSSL's check); one under it
    that the tracker does not admit (expired, no node name, revoked by central) answers every request with the reason."""
    with trio.move_on_after(timeout):
        try:
            await stream.do_handshake()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            # A scanner, a foreign CA's certificate, a client that gave up: counted by nobody, told at debug level.
            log.debug("tls.refused", reason=str(exc.__cause__ or exc)[:200])
            return None
        der = stream.getpeercert(binary_form=True)
        if not der or nodes is None:
            return ANYONE
        try:
            return Client(node=nodes.admit(der, clock()), nodes=nodes)
        except IdentityError as exc:
            return Client(refusal=str(exc))
    return None


async def _read_head(stream, buffer: bytearray, config) -> int:
    """Index past the next request head in ``buffer`` (reading as needed), or -1 when the client closed or dawdled.

    ``effective_idle_timeout`` for the first byte of a request, then ``header_timeout`` for the whole head:
    a client trickling a byte at a time holds its slot for ``header_timeout`` at most.
    """
    end = http_wire.head_end(buffer)
    if end >= 0:
        return end
    if not buffer:
        with trio.move_on_after(config.effective_idle_timeout):
            data = await stream.receive_some(65536)
            if not data:
                return -1
            buffer += data
        if not buffer:
            return -1
        end = http_wire.head_end(buffer)
    with trio.move_on_after(config.header_timeout):
        while end < 0:
            data = await stream.receive_some(65536)
            if not data:
                return -1
            buffer += data
            end = http_wire.head_end(buffer)
    return end


async def _serve_connection(stream, peer, client, desk, app, clock, metrics, server, table, handle, scheme) -> None:
    remote, buffer = peer[0], bytearray()
    try:
        while True:
            table.waiting(handle)
            end = await _read_head(stream, buffer, desk.config)
            if end < 0:
                return  # closed, idle or too slow
            table.busy(handle)
            head = bytes(buffer[:end])
            del buffer[:end]
            request = http_wire.parse_head(head)
            if request.path == "/announce" or request.path.startswith("/announce/"):
                body = announce_body(desk, metrics, request.path, request.query, remote, clock(), client)
                response = http_wire.encode_response(200, body, BENCODE, keep_alive=request.keep_alive,
                                                     head_only=request.method == "HEAD")
            elif request.path == "/scrape" or request.path.startswith("/scrape/") or (
                    request.path == "/caches" or request.path.startswith("/caches/")):
                answer = caches_body if request.path.startswith("/caches") else scrape_body
                body = answer(desk, metrics, request.path, request.query, remote, clock(), client)
                response = http_wire.encode_response(200, body, BENCODE, keep_alive=request.keep_alive,
                                                     head_only=request.method == "HEAD")
            else:
                response = await _asgi(app, request, peer, server, scheme)
            await stream.send_all(response)
            if not request.keep_alive:
                return
    except http_wire.HttpError as exc:
        response = http_wire.encode_response(exc.status, f"{exc}\n".encode(), "text/plain", keep_alive=False)
        await _send_quietly(stream, response)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    except Exception:  # a bug of ours: the client gets a 500, the log the traceback, the tracker lives on
        log.exception("http.crashed", remote=remote)
        await _send_quietly(stream, http_wire.encode_response(500, b"tracker internal error\n", "text/plain",
                                                              keep_alive=False))


async def _send_quietly(stream, data: bytes) -> None:
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def _asgi(app, request: http_wire.Request, client: tuple, server: tuple, scheme: str = "http") -> bytes:
    """Run one bodiless GET through an ASGI app and return the HTTP response bytes."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": scheme,
        "path": unquote(request.path),  # ASGI's path is percent-decoded: a store id may hold any character
        "raw_path": request.path.encode("latin-1"),
        "query_string": request.query,
        "root_path": "",
        "headers": request.headers,
        "client": client[:2],
        "server": server,
    }
    sent: list[dict] = []
    asked = False

    async def receive() -> dict:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await trio.sleep_forever()  # no disconnect to report while the app is still answering

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    content_type, extra = "application/octet-stream", []
    for name, value in start.get("headers", []):
        if name.lower() == b"content-type":
            content_type = value.decode("latin-1")
        elif name.lower() != b"content-length":
            extra.append((name, value))
    return http_wire.encode_response(start["status"], body, content_type, keep_alive=request.keep_alive,
                                     head_only=request.method == "HEAD", extra=extra)
