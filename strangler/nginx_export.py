"""routing.toml rendered as an nginx configuration that routes as the Python proxy routes.

At the edge, nginx forwards faster and with less CPU than the Python proxy (bench/README.md),
but it knows nothing of phases. This module writes what a phase means for routing into plain
nginx: keep-alive upstreams, one location per capability prefix (longest prefix wins, as in
the proxy), reads and writes split by method, the canary's sticky split as a `split_clients`
over the very string and arithmetic the proxy uses (`strangler.split`), the shadow phase's
copies as `mirror` subrequests, and the default upstream for every path no capability claims.
The sticky key needs a JWT's `sub`, which nginx cannot read, so a small njs module
(`strangler.js`, strangler.nginx_njs) computes it as proxy/forward.py does. What each phase
means in nginx terms is decided in strangler.nginx_plan; this module writes the text.

Pure functions: routing in, text out. `strangler export nginx` (export_cli.py) writes files.
"""

from __future__ import annotations

from dataclasses import dataclass

from strangler.nginx_njs import render_njs
from strangler.nginx_plan import CapabilityPlan, EdgePlan, plan
from strangler.nginx_routing import EdgeRouting, address
from strangler.phases import Side
from strangler.split import percent_text, split_key

__all__ = ["NJS_MODULE", "NginxExport", "render", "render_standalone"]

NJS_MODULE = "/usr/lib/nginx/modules/ngx_http_js_module.so"
"""Where Debian's libnginx-mod-http-js installs the njs module."""

# The Python proxy's cookie attributes (proxy/forward.py); tests compare both edges' cookies.
_COOKIE_ATTRIBUTES = "Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax"
_READS = ("GET", "HEAD", "OPTIONS")  # proxy/decision.py READ_METHODS
_MIRROR_ROOT = "/_strangler_mirror"
_TRACEPARENT = "~^00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$"  # proxy/headers.py

# proxy/paths.py's refusals as PCRE over $request_uri's path (up to `?` or `#`), without case.
# First what it refuses outright: an encoded slash, backslash or NUL, a backslash, a byte
# outside ASCII. Then what it accepts: percent escapes that decode to UTF-8 (RFC 3629's byte
# sequences), `%` not followed by two hex digits (kept as is), any other character.
_REFUSED_PATH = r"~*^[^?#]*(?:%2f|%5c|%00|\x5c|[^\x00-\x7f])"
_TAIL = "%[89ab][0-9a-f]"  # a UTF-8 continuation byte, escaped
_UTF8_ESCAPED = "|".join(
    [
        "%[0-7][0-9a-f]",
        f"%(?:c[2-9a-f]|d[0-9a-f]){_TAIL}",
        f"%e0%[ab][0-9a-f]{_TAIL}",
        f"%e[1-9a-cef]{_TAIL}{_TAIL}",
        f"%ed%[89][0-9a-f]{_TAIL}",
        f"%f0%[9ab][0-9a-f]{_TAIL}{_TAIL}",
        f"%f[1-3]{_TAIL}{_TAIL}{_TAIL}",
        f"%f4%8[0-9a-f]{_TAIL}{_TAIL}",
    ]
)
_ACCEPTED_PATH = rf"~*^(?:[^%?#]++|%(?![0-9a-f]{{2}})|{_UTF8_ESCAPED})*+(?:[?#]|$)"

_NOT_DONE = """\
# What the Python proxy does that this configuration does not:
#   - shadow compare: mirrored reads are sent and their answers discarded; nothing is
#     compared or counted, so there is no mismatch rate (the canary gate needs one: run
#     the shadow and canary phases through the Python proxy, see docs/scale-out.md); and a
#     slow copy holds up the next request on its client's connection (nginx's mirror)
#   - fallback: a read the service fails (connect error, timeout, 502/503/504) is not
#     asked again of the monolith; the client gets nginx's error
#   - circuit breaker: a failing upstream keeps getting its share of requests
#   - read-your-writes: a user who just wrote is not pinned to the side that took the write
#     while the relay carries it over (nor given the sticky cookie on a write, which the
#     proxy does for that; here only a canary read without one sets it)
#   - write fence: writes are not held while they change sides (writes_cutover and its
#     rollback must go through the Python proxy, which `strangler advance` drives)
#   - total_timeout: nginx bounds each wait for the upstream (connect, send, read between
#     two reads), not the whole answer
#   - the admin API, audit log, metrics and dashboard (/_strangler/...): here those paths
#     go to the default upstream like any unclaimed path
#   - hot reload: an edit of routing.toml reaches nginx only through a new export and
#     `nginx -s reload`
#   - X-Strangler-Target (forcing a side): dropped, never honoured
#   - request hygiene: nginx forwards the path as the client sent it (the proxy forwards its
#     normalised form; both route on the normalised form and answer 400 to the paths the
#     proxy refuses, and nginx to a few more: `..` above the root, `%` without two hex
#     digits), and its own limits on headers
#   - connection limits: max_connections caps the proxy's connections to an upstream (a
#     request waits for a free one, then gets 503); here it only sizes each worker's idle
#     keep-alive connections, and nginx opens as many as requests need
# Percentages are read with two decimals (split_clients): the canary's as the proxy reads
# it, shadow_percent rounded (the proxy samples it unrounded).
"""


@dataclass(frozen=True)
class NginxExport:
    """The two files of an export: the http-context include and the njs module it imports."""

    conf: str
    js: str


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _millis(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


class _Renderer:
    def __init__(self, edge: EdgePlan) -> None:
        self.edge = edge
        self.options = edge.routing.proxy

    # -- pieces ------------------------------------------------------------------------------

    def _upstreams(self) -> list[str]:
        lines = []
        for name, block in self.edge.upstream_block.items():
            upstream = self.edge.routing.upstreams[name]
            lines += [
                f"upstream {block} {{",
                f"    server {address(upstream)};",
                "    # Idle connections each worker keeps open for reuse (the proxy's pool size,",
                "    # max_connections). Not a limit: nginx opens as many as requests need.",
                f"    keepalive {upstream.max_connections};",
                "    keepalive_timeout 4s;  # under uvicorn's 5 s: never reuse a closing one",
                "}",
                "",
            ]
        return lines

    def _forwarding(self) -> list[str]:
        trusted = self.options.trusted_proxies
        lines = [
            "# The request id: the client's when it is safe to log and echo (the proxy's rule),",
            "# else nginx's own. traceparent: the client's when valid, else a new trace.",
            "map $http_x_request_id $strangler_request_id {",
            '    "~^[A-Za-z0-9._:-]{1,128}$" $http_x_request_id;',
            "    default $request_id;",
            "}",
            'map $request_id $strangler_span_id { "~^(?<strangler_span>[0-9a-f]{16})" '
            "$strangler_span; }",
            "map $http_traceparent $strangler_traceparent {",
            f"    {_quote(_TRACEPARENT)} $http_traceparent;",
            '    default "00-${request_id}-${strangler_span_id}-01";',
            "}",
        ]
        if not trusted:
            lines += [
                "# No trusted proxies: X-Forwarded-For and -Proto are replaced, never extended.",
                "map $remote_addr $strangler_forwarded_for { default $remote_addr; }",
                "map $scheme $strangler_forwarded_proto { default $scheme; }",
            ]
            return lines
        lines += [
            "# X-Forwarded-For and -Proto are extended only for the trusted proxies.",
            "geo $strangler_trusted_peer {",
            "    default 0;",
            *(f"    {network} 1;" for network in trusted),
            "}",
            "map $strangler_trusted_peer $strangler_forwarded_for {",
            "    1 $proxy_add_x_forwarded_for;",
            "    default $remote_addr;",
            "}",
            'map "$strangler_trusted_peer:$http_x_forwarded_proto" $strangler_forwarded_proto {',
            '    "~^1:(?<strangler_proto>.+)$" $strangler_proto;',
            "    default $scheme;",
            "}",
        ]
        return lines

    @staticmethod
    def _refused_paths() -> list[str]:
        return [
            "# Request paths the proxy answers 400 (proxy/paths.py), which nginx would decode",
            "# and route (an encoded slash as a slash): an encoded slash, backslash or NUL, a",
            "# backslash, a byte outside ASCII, percent escapes that are not UTF-8. The query",
            "# string is not looked at, as the proxy does not.",
            "map $request_uri $strangler_refused_path {",
            f"    {_quote(_REFUSED_PATH)} 1;",
            f"    {_quote(_ACCEPTED_PATH)} 0;",
            "    default 1;",
            "}",
        ]

    def _capability_variables(self, cap: CapabilityPlan) -> list[str]:
        i = cap.ident
        config = cap.config
        monolith = self.edge.upstream_block[config.monolith]
        service = self.edge.upstream_block[config.service]
        lines = [f"# {cap.name}: {cap.summary}"]
        if cap.keyed:
            cookie = f"{self.options.sticky_cookie}=$strangler_made_{i}; {_COOKIE_ATTRIBUTES}"
            lines += [
                f"js_var $strangler_made_{i};  # set by the njs module when it made a key up",
                f"js_set $strangler_key_{i} strangler_edge.key_{i};",
            ]
            if cap.splits:
                lines += [
                    f"split_clients {_quote(split_key(cap.name, f'${{strangler_key_{i}}}'))} "
                    f"$strangler_split_{i} {{",
                    f"    {percent_text(config.canary_percent)} {service};",
                    f"    * {monolith};",
                    "}",
                ]
            else:
                everybody = service if cap.everybody is Side.SERVICE else monolith
                lines += [
                    f"# {percent_text(config.canary_percent)}: every user's reads -> {everybody}; "
                    "the key is still read,",
                    "# and made up and set as the cookie for a user without one, as the proxy",
                    "# does in any canary.",
                    f"map $strangler_key_{i} $strangler_split_{i} {{ default {everybody}; }}",
                ]
            lines += [
                f"map $strangler_made_{i} $strangler_cookie_{i} {{",
                '    "" "";',
                f"    default {_quote(cookie)};",
                "}",
            ]
        if cap.target != cap.read_target:
            lines.append(f"map $request_method $strangler_target_{i} {{")
            lines += [f"    {method} {cap.read_target};" for method in _READS]
            lines += [f"    default {cap.write_target};", "}"]
        if cap.target.startswith("$"):
            lines += self._facts_of(cap, cap.target, f"$strangler_host_{i}", f"$strangler_name_{i}")
        if cap.mirror_target is not None and cap.mirror_target.startswith("$"):
            lines += [
                f"map $strangler_split_{i} {cap.mirror_target} {{",
                f"    {service} {monolith};",
                f"    default {service};",
                "}",
            ]
            lines += self._facts_of(cap, cap.mirror_target, f"$strangler_shadow_host_{i}", None)
        if cap.sampled:
            lines += [
                f"split_clients $request_id $strangler_sampled_{i} {{",
                f"    {percent_text(config.shadow_percent)} 1;",
                "    * 0;",
                "}",
            ]
        lines.append("")
        return lines

    def _facts_of(
        self, cap: CapabilityPlan, variable: str, host: str, name: str | None
    ) -> list[str]:
        """Maps from a variable upstream to its Host header and its routing.toml name."""
        blocks = self.edge.candidates(cap, variable)
        lines = [f"map {variable} {host} {{"]
        lines += [f"    {b} {_quote(address(self.edge.upstream(b)))};" for b in blocks]
        lines.append("}")
        if name is not None:
            lines.append(f"map {variable} {name} {{")
            lines += [f"    {b} {_quote(self.edge.name_of(b))};" for b in blocks]
            lines.append("}")
        return lines

    def _timeouts(self, blocks: list[str]) -> list[str]:
        # One location may send to two upstreams (reads and writes apart): the longer bounds.
        upstreams = [self.edge.upstream(b) for b in blocks]
        connect = max(u.connect_timeout for u in upstreams)
        read = max(u.read_timeout for u in upstreams)
        return [
            f"proxy_connect_timeout {_millis(connect)};",
            f"proxy_send_timeout {_millis(read)};",
            f"proxy_read_timeout {_millis(read)};",
        ]

    @staticmethod
    def _headers(host: str) -> list[str]:
        # proxy_set_header is inherited only by a location that sets none, and every location
        # here sets its own Host: so each carries the whole list.
        return [
            f"proxy_set_header Host {host};",
            'proxy_set_header Connection "";',
            "proxy_set_header X-Forwarded-For $strangler_forwarded_for;",
            "proxy_set_header X-Forwarded-Proto $strangler_forwarded_proto;",
            "proxy_set_header X-Forwarded-Host $http_host;",
            'proxy_set_header Forwarded "";',
            "proxy_set_header X-Request-ID $strangler_request_id;",
            "proxy_set_header traceparent $strangler_traceparent;",
            'proxy_set_header X-Strangler-Target "";',
            'proxy_set_header X-Strangler-Admin-Token "";',
            # hop-by-hop headers nginx would pass on (it drops TE, Keep-Alive and Upgrade)
            'proxy_set_header Trailer "";',
            'proxy_set_header Proxy-Connection "";',
            'proxy_set_header Proxy-Authorization "";',
        ]

    def _location(self, match: str, body: list[str]) -> list[str]:
        return [f"    location {match} {{", *(f"        {line}" for line in body), "    }", ""]

    def _forwarding_body(
        self, target: str, host: str, name: str, blocks: list[str], extra: list[str]
    ) -> list[str]:
        return [
            f"proxy_pass http://{target};",
            *extra,
            *self._headers(host),
            *self._timeouts(blocks),
            "add_header X-Request-ID $strangler_request_id always;",
            f"add_header X-Strangler-Upstream {name} always;",
        ]

    def _capability_locations(self, cap: CapabilityPlan) -> list[str]:
        i = cap.ident
        target = cap.target
        if target.startswith("$"):
            host, name = f"$strangler_host_{i}", f"$strangler_name_{i}"
        else:
            host = _quote(address(self.edge.upstream(target)))
            name = _quote(self.edge.name_of(target))
        extra: list[str] = []
        mirror_uri = f"{_MIRROR_ROOT}/{i}"
        if cap.mirror_target is not None:
            extra += [f"mirror {mirror_uri};", "mirror_request_body off;"]
        body = self._forwarding_body(target, host, name, self.edge.candidates(cap, target), extra)
        if cap.keyed:
            body.append(f"add_header Set-Cookie $strangler_cookie_{i} always;")
        lines: list[str] = []
        for prefix in cap.config.prefixes:
            if prefix == "/":
                lines += self._location('"/"', body)
                continue
            lines += self._location(f"= {_quote(prefix)}", body)
            lines += self._location(_quote(prefix + "/"), body)
        if cap.mirror_target is not None:
            mirror = cap.mirror_target
            if mirror.startswith("$"):
                mirror_host = f"$strangler_shadow_host_{i}"
            else:
                mirror_host = _quote(address(self.edge.upstream(mirror)))
            mirror_body = [
                "internal;",
                "if ($request_method != GET) { return 204; }  # the proxy shadows GETs only",
            ]
            if cap.sampled:
                mirror_body.append(f"if ($strangler_sampled_{i} = 0) {{ return 204; }}")
            mirror_body += [
                f"proxy_pass http://{mirror}$request_uri;",
                "proxy_pass_request_body off;",
                'proxy_set_header Content-Length "";',
                *self._headers(mirror_host),
                *self._timeouts(self.edge.candidates(cap, mirror)),
            ]
            lines += self._location(f"= {_quote(mirror_uri)}", mirror_body)
        return lines

    # -- the files ---------------------------------------------------------------------------

    def conf(self, listen: str, js_path: str, source: str) -> str:
        options = self.options
        default_block = self.edge.upstream_block[options.default_upstream]
        default = self.edge.upstream(default_block)
        lines = [
            f"# strangler.conf: routing.toml ({source}) as nginx routes it. Generated by",
            "# `strangler export nginx`: export again instead of editing.",
            "#",
            "# Include it in the http context. It needs the njs module (Debian package",
            "# libnginx-mod-http-js) loaded in the main context:",
            f"#   load_module {NJS_MODULE};",
            "#",
            "# Routing, as the Python proxy routes (strangler/phases.py, proxy/decision.py):",
            *(f"#   {cap.name} {cap.summary}" for cap in self.edge.capabilities),
            f"#   every path no capability claims -> {options.default_upstream}",
            "#",
            _NOT_DONE.rstrip("\n"),
            "",
            f"js_import strangler_edge from {_quote(js_path)};",
            "",
            "log_format strangler '$remote_addr [$time_local] \"$request\" $status '",
            "    '$body_bytes_sent upstream=$upstream_addr request_id=$strangler_request_id '",
            "    'time=$request_time upstream_time=$upstream_response_time';",
            "",
            *self._forwarding(),
            "",
            *self._refused_paths(),
            "",
            *self._upstreams(),
        ]
        for cap in self.edge.capabilities:
            lines += self._capability_variables(cap)
        body_limit = options.body_limit_bytes
        lines += [
            "server {",
            f"    listen {listen};",
            "    # the proxy's body_limit_bytes (nginx reads 0 as no limit: 1 byte is its least)"
            if body_limit == 0
            else "    # the proxy's body_limit_bytes",
            f"    client_max_body_size {max(1, body_limit)};",
            "    proxy_http_version 1.1;",
            "    proxy_hide_header X-Request-ID;",
            "    proxy_hide_header X-Strangler-Upstream;",
            "    proxy_hide_header X-Strangler-Fallback;",
            "    if ($strangler_refused_path) {  # refused as the proxy refuses it, unrouted",
            "        return 400;",
            "    }",
            "",
        ]
        claims_root = any("/" in cap.config.prefixes for cap in self.edge.capabilities)
        if not claims_root:
            lines += self._location(
                "/",
                self._forwarding_body(
                    default_block,
                    _quote(address(default)),
                    _quote(options.default_upstream),
                    [default_block],
                    [],
                ),
            )
        for cap in self.edge.capabilities:
            lines += self._capability_locations(cap)
        if lines[-1] == "":
            lines.pop()
        lines.append("}")
        return "\n".join(lines) + "\n"


def render(
    routing: EdgeRouting, *, listen: str, js_path: str, source: str = "routing.toml"
) -> NginxExport:
    """The include (`strangler.conf`) and njs module (`strangler.js`) for `routing`.

    `js_path` is where the module will be, as nginx must find it (absolute, or relative to
    nginx's prefix); `listen` is the server's `listen` argument, e.g. `127.0.0.1:8080`.
    """
    edge = plan(routing)
    return NginxExport(
        conf=_Renderer(edge).conf(listen, js_path, source),
        js=render_njs(edge.capabilities, routing.proxy.sticky_cookie, source),
    )


def render_standalone(*, include: str, njs_module: str = NJS_MODULE) -> str:
    """A whole nginx.conf around the include, every path relative to nginx's prefix.

    Run it as `nginx -p DIR -c DIR/nginx.conf` (add `-g 'daemon off;'` to keep it in the
    foreground); DIR must hold `logs/` (the export creates it). Temporary files go to DIR.
    """
    return f"""\
# nginx.conf: a whole nginx around strangler.conf, generated by `strangler export nginx
# --standalone`. Run:  nginx -p DIR -c DIR/nginx.conf   (paths below are relative to DIR)
# Reload after a new export:  nginx -p DIR -c DIR/nginx.conf -s reload

load_module {njs_module};

worker_processes auto;
pid logs/nginx.pid;
error_log logs/error.log notice;

events {{
    worker_connections 4096;
}}

http {{
    client_body_temp_path tmp_client_body;
    proxy_temp_path tmp_proxy;
    fastcgi_temp_path tmp_fastcgi;
    uwsgi_temp_path tmp_uwsgi;
    scgi_temp_path tmp_scgi;

    include {_quote(include)};

    access_log logs/access.log strangler;  # the log format strangler.conf defines
}}
"""
