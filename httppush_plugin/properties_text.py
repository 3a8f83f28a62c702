"""The words of each endpoint property (``properties.PROPERTIES``): what the shipped yaml's comment and
``docs/configuration.md`` say (``doc``), and the label and hint eKuiper's UI shows, in English and Chinese.

Only ``scripts/gen_config.py`` reads them: the plugin itself never needs its own documentation. A test checks that
every property has its words and that the generated files are current.
"""

from __future__ import annotations

from typing import NamedTuple


class Words(NamedTuple):
    doc: str
    label_en: str
    label_zh: str
    hint_en: str
    hint_zh: str
    #: the docs page (relative to ``docs/``) that tells more, linked from the properties table
    see: str = ""


TEXTS: dict[str, Words] = {
    "method": Words(
        doc="HTTP method of the endpoint: POST or PUT. A POST stream and a PUT stream may share one path.",
        label_en="Method",
        label_zh="请求方法",
        hint_en="HTTP method of the endpoint: POST or PUT.",
        hint_zh=("端点的 HTTP 方法：POST 或 PUT。"),
    ),
    "fields": Words(
        doc=("FORMAT=\"delimited\": names of the columns, in order; without it columns are named col0, col1, ... "
            "Example: fields: [id, temperature]"),
        label_en="Fields",
        label_zh="列名",
        hint_en="FORMAT=delimited: column names in order; without them columns are named col0, col1, ...",
        hint_zh=("FORMAT=delimited 时的列名（按顺序）；不设置时列名为 "
            "col0、col1……"),
        see="formats.md",
    ),
    "decoder": Words(
        doc=("A custom decoder, \"<module>:<function>\", that turns a body (bytes) into a record (dict) or a list of"
            " records. <module>.py is looked up in $HTTPPUSH_DECODERS_PATH, then in the plugin's decoders/ "
            "folder. When set, it replaces FORMAT (eKuiper 2.x refuses FORMAT=\"custom\"). Example: decoder: "
            "\"kv:decode\""),
        label_en="Decoder",
        label_zh="解码器",
        hint_en=("Custom decoder \"<module>:<function>\" from $HTTPPUSH_DECODERS_PATH or the plugin's decoders/ "
            "folder; replaces FORMAT."),
        hint_zh=("自定义解码器 \"<模块>:<函数>\"，从 $HTTPPUSH_DECODERS_PATH "
            "或插件的 decoders/ 目录加载；设置后取代 FORMAT。"),
        see="formats.md",
    ),
    "framing": Words(
        doc=("FORMAT=\"json\": how a body holds its records. whole: the body is one JSON text, an object (one "
            "record) or an array of objects (one record each). lines: NDJSON / JSON Lines, one object per line "
            "(\"\\n\" or \"\\r\\n\"), blank lines skipped; a bad line refuses the whole body (400 naming the line) and "
            "nothing of it is delivered. A request with Content-Type application/x-ndjson, application/jsonl or "
            "application/json-lines is read as lines whatever this says. Example: framing: lines"),
        label_en="JSON framing",
        label_zh="JSON 分帧",
        hint_en=("FORMAT=json: whole reads the body as one JSON object or array of objects; lines reads NDJSON / JSON "
            "Lines, one object per line (blank lines skipped; a bad line refuses the whole body). Content-Type "
            "application/x-ndjson, application/jsonl or application/json-lines selects lines for one request."),
        hint_zh=("FORMAT=json 时的记录划分方式：whole 表示整个请求体是一个 JSON "
            "对象或对象数组；lines 表示 NDJSON / JSON Lines，每行一个对象（跳"
            "过空行；任一行有误则整个请求体被拒绝）。Content-Type 为 "
            "application/x-ndjson、application/jsonl 或 "
            "application/json-lines 的请求总按行读取。"),
        see="formats.md",
    ),
    "meta": Words(
        doc=("Request facts each record carries, readable in SQL with meta(<name>): any of method, path, "
            "remoteAddr (the client's IP address), contentType (the Content-Type header, cut to 256 characters) "
            "and user (the principal that auth admitted; absent without auth) and requestId (the client's "
            "X-Request-Id when it is printable ASCII, cut to 256 characters, else a generated one; every answer "
            "then echoes it in X-Request-Id). [] sends none, which is the cheapest for eKuiper: it decodes the "
            "meta of every record, so none is the default. Example: meta: [path, remoteAddr]"),
        label_en="Request metadata",
        label_zh="请求元数据",
        hint_en=("Request facts each record carries, readable with meta(<name>) in SQL: method, path, remoteAddr, "
            "contentType (cut to 256 characters), user (the principal that auth admitted; absent without auth), "
            "requestId (the client's X-Request-Id or a generated one, echoed in the answer's X-Request-Id). An "
            "empty list sends none, the cheapest for eKuiper."),
        hint_zh=("每条记录携带的请求信息，可在 SQL 中用 meta(<名称>) "
            "读取：method、path、remoteAddr、contentType（最多 256 "
            "个字符）、user（auth 认证通过的身份；未配置 auth "
            "时没有）、requestId（客户端的 X-Request-Id 或生成的 "
            "ID，并在响应的 X-Request-Id 中返回）。空列表表示不携带，eKuiper "
            "处理开销最小。"),
        see="metadata.md#request-metadata",
    ),
    "auth": Words(
        doc=("Who may push: {} (or {type: none}) lets anyone. Otherwise {type: basic, users: {<name>: <password>, "
            "...}}, {type: bearer, tokens: {<name>: <token>, ...}} (or a list of tokens), {type: hmac, secret: "
            "<secret>} (a signature of the body in X-Hub-Signature-256, as GitHub sends it; also header, "
            "algorithm, encoding, prefix; with timestampHeader (and window, default 300 s) the signature covers "
            "\"<timestamp>\\n<method>\\n<target>\\n<body>\" and a time outside the window is refused) or {type: "
            "clientcert} (mutual TLS: httpServerTls.cafile in the plugin's etc/kuiper.yaml; the one CN of the "
            "subject; names: [CNs] and/or subjects: [RFC 4514 subjects] admit only those, others get 403) or {type: "
            "jwt, jwks: <JWKS file>, jwksUrl: <URL>, issuer: <iss>, audience: <aud>} (a JSON Web Token in "
            "Authorization: Bearer; also algorithms (default [RS256, ES256]; never none or HS*), leeway (30 s) and "
            "jwksRefresh (300 s); the token's sub is the principal; a refused token gets 401 with Bearer "
            "error=\"invalid_token\"). Any "
            "secret may be {env: NAME}, read from the environment: better, as eKuiper logs a source's properties "
            "at every rule start. Refused requests get 401; a client address with 10 failures within 60 s gets 429 "
            "for the rest of that minute. Keys in this file reach the plugin lower-cased, names of users and tokens "
            "included. Streams on one path and method must use the same auth. Examples below."),
        label_en="Authentication",
        label_zh="认证",
        hint_en=("Who may push; empty: anyone. type: basic (users: {name: password}), bearer (tokens: {name: token} or"
            " a list), hmac (secret; header X-Hub-Signature-256, algorithm sha256, encoding hex, prefix sha256= "
            "by default, as GitHub webhooks; timestampHeader and window (300 s) sign time, method, path and body)"
            ", clientcert (mutual TLS, needs httpServerTls.cafile; names / subjects limit who) or jwt (jwks file "
            "and/or jwksUrl, issuer, audience, algorithms, leeway; sub is the principal). A secret may be "
            "{env: NAME}. Refused requests get 401 with WWW-Authenticate, repeated failures 429; the principal is "
            "meta(user). Streams on one path and method must use the same auth."),
        hint_zh=("允许推送的客户端；为空表示不限制。type：basic（users：{用户名: "
            "密码}）、bearer（tokens：{名称: 令牌} "
            "或令牌列表）、hmac（secret；默认 header 为 "
            "X-Hub-Signature-256、algorithm 为 "
            "sha256、encoding 为 hex、prefix 为 sha256=，与 "
            "GitHub webhook 相同；设置 timestampHeader 和 window（默认 300 秒）时签名覆盖时间戳、"
            "方法、路径和请求体）、clientcert（双向 TLS，需设置 "
            "httpServerTls.cafile；names / subjects 限定允许的证书）或 jwt（JWKS 文件 jwks 和/或 jwksUrl、"
            "issuer、audience、algorithms、leeway；令牌的 sub 即认证身份）。密钥可写为 {env: "
            "环境变量名}。认证失败返回 401 及 WWW-Authenticate，多次失败返回 429；认证身份可用 "
            "meta(user) 读取。同一路径和方法上的流必须使用相同的 auth。"),
        see="auth.md",
    ),
    "successStatus": Words(
        doc=("The status of a request whose records were all delivered: 200, 201 or 202 (body {\"accepted\": n, "
            "\"sources\": m}) or 204 (no body). Errors keep their own status and JSON body. Example: successStatus:"
            " 202"),
        label_en="Success status",
        label_zh="成功状态码",
        hint_en=("The status of a request whose records were all delivered: 200, 201, 202 (with the {\"accepted\", "
            "\"sources\"} body) or 204 (no body). Errors keep their own status."),
        hint_zh=("记录全部交付后返回的状态码：200、201、202（带 {\"accepted\", "
            "\"sources\"} 响应体）或 204（无响应体）。错误响应保持各自的状态码。"),
        see="http-answers.md#answers-for-browsers-and-clients",
    ),
    "cors": Words(
        doc=("CORS for browser clients, off by default ({}): then OPTIONS gets 405 and answers carry no CORS "
            "headers. With {origins: [...], headers: [...], maxAge: <seconds>, credentials: <bool>} a preflight "
            "OPTIONS from an allowed Origin gets 204 with Access-Control-Allow-Origin/-Methods/-Headers (headers "
            "default [Content-Type]; add Authorization with auth) and -Max-Age (0: not sent); other origins get 403, "
            "and so does any request carrying an Origin not allowed (a page's simple request, sent without a "
            "preflight). Answers to an allowed Origin carry Access-Control-Allow-Origin: <that origin> and the "
            "headers a page may read; every answer carries Vary: Origin. credentials: true adds "
            "Access-Control-Allow-Credentials: true, which a page's fetch with credentials: \"include\" needs (not "
            "with origins [\"*\"]). origins: [\"*\"] allows any origin (still echoed, never a literal *). Tested in "
            "headless Chromium. Example: cors: {origins: [\"https://app.example.com\"], headers: [Content-Type, "
            "Authorization], maxAge: 600}"),
        label_en="CORS",
        label_zh="跨域（CORS）",
        hint_en=("CORS for browser clients; empty: off (OPTIONS gets 405). {origins: [...], headers: [...] (default "
            "[Content-Type]), maxAge: seconds, credentials: true|false}: a preflight OPTIONS from an allowed Origin "
            "gets 204 with Access-Control-Allow-*; other origins get 403, on a preflight or any other request; "
            "answers to allowed origins carry Access-Control-Allow-Origin: <origin>. credentials: true lets pages "
            "fetch with credentials: \"include\" (not with origins [\"*\"]). origins [\"*\"] allows any origin."),
        hint_zh=("浏览器客户端的 CORS；为空表示关闭（OPTIONS 返回 405）。{origins:"
            " [...], headers: [...]（默认 [Content-Type]）, "
            "maxAge: 秒, credentials: true|false}：来自允许的 Origin 的预检 OPTIONS 返回 204 及 "
            "Access-Control-Allow-* 头；其他来源的预检及其他请求均返回 403；对允许来源的响应带"
            " Access-Control-Allow-Origin: <来源>。credentials 为 true 时页面可用 "
            "credentials: \"include\" 发送请求（不可与 origins [\"*\"] 同用）。"
            "origins 为 [\"*\"] 时允许任意来源。"),
        see="http-answers.md#answers-for-browsers-and-clients",
    ),
    "metaHeaders": Words(
        doc=("Request headers each record carries in meta, by name or * glob, case-insensitive; the meta key is "
            "the header name lower-cased (meta(`x-device-id`)), the value cut to 256 characters, a repeated "
            "header joined with \", \". Never one whose name is a reserved meta name (user, method, path, remoteAddr, "
            "contentType, requestId, a template variable; any case): naming one is refused at start, a glob skips it."
            " Example: metaHeaders: [\"X-Device-*\", \"User-Agent\"]"),
        label_en="Metadata headers",
        label_zh="元数据请求头",
        hint_en=("Request headers each record carries in meta, by name or * glob, case-insensitive (e.g. X-Device-*); "
            "the meta key is the lower-cased header name, the value cut to 256 characters. Reserved names (user, "
            "method, path, remoteAddr, contentType, requestId, template variables) are never taken."),
        hint_zh=("每条记录在 meta 中携带的请求头，按名称或 * 通配符匹配，不区分大小写（如 "
            "X-Device-*）；meta 键为小写的请求头名，值最多 256 个字符。保留名称（user、"
            "method、path、remoteAddr、contentType、requestId、路径模板变量）不会从请求头获取。"),
        see="metadata.md#request-metadata",
    ),
    "metaQuery": Words(
        doc=("Query parameters each record carries in meta: true for all, or a list of names; a repeated one "
            "becomes a list. A header wins over a parameter of the same name. Never a reserved meta name (user, "
            "method, path, remoteAddr, contentType, requestId, a template variable; any case): listing one is "
            "refused at start, true skips it. Example: metaQuery: [site]"),
        label_en="Metadata query parameters",
        label_zh="元数据查询参数",
        hint_en=("Query parameters each record carries in meta: true for all, or a list of names; a repeated parameter"
            " becomes a list. Reserved names (user, method, path, remoteAddr, contentType, requestId, template "
            "variables) are never taken."),
        hint_zh=("每条记录在 meta 中携带的查询参数：true "
            "表示全部，或参数名列表；重复的参数成为列表。保留名称（user、method、path、remoteAddr、"
            "contentType、requestId、路径模板变量）不会从查询参数获取。"),
        see="metadata.md#request-metadata",
    ),
    "trustedProxies": Words(
        doc=("Proxies (IP addresses or CIDR networks) whose X-Forwarded-For (or Forwarded, see proxyHeader) names "
            "the client: when the peer is one of them, meta(remoteAddr) is the rightmost address of that header "
            "(all its lines joined in order) that is not a trusted proxy. Other peers' headers are ignored. Example:"
            " trustedProxies: [10.0.0.0/8, \"::1\"]"),
        label_en="Trusted proxies",
        label_zh="可信代理",
        hint_en=("IP addresses or CIDR networks of proxies whose X-Forwarded-For (or Forwarded, see proxyHeader) names"
            " the client: meta(remoteAddr) is then the rightmost address there that is not a trusted proxy. Other "
            "peers' headers are ignored."),
        hint_zh=("可信代理的 IP 地址或 CIDR 网段：来自它们的请求按 X-Forwarded-For"
            "（或 Forwarded，见 proxyHeader）确定客户端，meta(remoteAddr) "
            "为其中从右起第一个非可信代理地址。其他来源的这些请求头被忽略。"),
        see="metadata.md#request-metadata",
    ),
    "proxyHeader": Words(
        doc=("Which header trustedProxies name the client in: X-Forwarded-For (the default; what nginx's "
            "$proxy_add_x_forwarded_for and HAProxy's option forwardfor send) or Forwarded (RFC 7239 for=). Only "
            "that header is read: a client cannot slip its own address in through the other one. Example: "
            "proxyHeader: Forwarded"),
        label_en="Proxy header",
        label_zh="代理请求头",
        hint_en=("The header trusted proxies name the client in: X-Forwarded-For (default) or Forwarded (RFC 7239). "
            "The other one is ignored."),
        hint_zh=("可信代理用来标明客户端地址的请求头：X-Forwarded-For（默认）或 "
            "Forwarded（RFC 7239）。另一个请求头被忽略。"),
        see="metadata.md#request-metadata",
    ),
    "idempotency": Words(
        doc=("Idempotent retries, off by default ({}): true, or {window: <seconds, default 300>, maxKeys: <default"
            " 10000>}. A request whose Idempotency-Key header (1-255 visible ASCII characters, or an RFC 8941 "
            "\"quoted\" string) repeats one answered 2xx within window seconds is not delivered again: it gets the "
            "stored status and body, with Idempotent-Replayed: true. The same key for another request (method, "
            "path, Content-Type or body differ) gets 422; while the first is still being handled, 409 with "
            "Retry-After. Any other answer forgets the key: a retry is handled afresh. Keys are per endpoint and "
            "per user (auth); at most maxKeys per endpoint, shared fairly: the oldest key of the user holding the "
            "most is forgotten first, so with N users each keeps at least maxKeys / N. They live in the plugin "
            "process: a rule restart keeps them, a restart of the plugin or of eKuiper forgets them. Without it "
            "the header is ignored. Streams on one path and method must agree on it. Example: idempotency: "
            "{window: 600, maxKeys: 50000}"),
        label_en="Idempotent retries",
        label_zh="幂等重试",
        hint_en=("Idempotent retries; empty: off (the Idempotency-Key header is ignored). true, or {window: seconds "
            "(default 300), maxKeys: keys per endpoint (default 10000)}: a request whose Idempotency-Key (1-255 "
            "visible ASCII characters) repeats one answered 2xx within the window is not delivered again and gets"
            " the stored answer with Idempotent-Replayed: true; the same key for another request (method, path, "
            "Content-Type or body) gets 422, while the first is in flight 409. Other answers forget the key. Keys"
            " are per endpoint and user, maxKeys shared fairly between users; a rule restart keeps them, a plugin "
            "or eKuiper restart forgets them. "
            "Streams on one path and method must use the same setting."),
        hint_zh=("幂等重试；为空表示关闭（忽略 Idempotency-Key 请求头）。true，或 "
            "{window: 秒（默认 300）, maxKeys: 每个端点的键数（默认 "
            "10000）}：Idempotency-Key（1–255 个可见 ASCII "
            "字符）与窗口期内已返回 2xx 的请求相同时，不再重复交付，返回保存的响应并带 "
            "Idempotent-Replayed: "
            "true；同一个键用于不同的请求（方法、路径、Content-Type 或请求体不同）返回"
            " 422，前一个请求仍在处理时返回 "
            "409。其他响应会忘记该键。键按端点和用户区分，maxKeys 在用户间公平分配；重启规则时保留，重启插件或 eKuiper"
            " 后丢失。同一路径和方法上的流必须使用相同的设置。"),
        see="operations.md#idempotent-retries",
    ),
    "rateLimit": Words(
        doc=("Per-client rate limit, off by default ({}): {rate: <requests a second>, burst: <requests at once, "
            "default rate>, by: address | user, maxClients: <default 10000>}. A token bucket per client, checked "
            "when a request's head is in, before its body is read and (by address) before its credentials: past it, "
            "429 with Retry-After (whole seconds until the next request is admitted, at least 1). by: address is "
            "the peer's or, behind trustedProxies, meta(remoteAddr); by: user is the principal of auth (basic, "
            "bearer, jwt, clientcert; not hmac). At most maxClients buckets per endpoint (full ones are forgotten "
            "first; past that, new clients share one bucket). Counted in httppush_rate_limited_total. Streams on "
            "one path and method must agree on it. Example: rateLimit: {rate: 100, burst: 200}"),
        label_en="Rate limit per client",
        label_zh="按客户端限流",
        hint_en=("Per-client token bucket; empty: off. {rate: requests per second, burst: requests at once (default "
            "rate), by: address (default; behind trustedProxies the forwarded address) or user (the auth "
            "principal), maxClients: buckets kept per endpoint (default 10000)}. Past it: 429 with Retry-After, "
            "before the body is read. Streams on one path and method must use the same setting."),
        hint_zh=("按客户端的令牌桶限流；为空表示关闭。{rate: 每秒请求数, burst: "
            "可一次发送的请求数（默认等于 rate）, by: address（默认；经可信代理时为转发的客户端地址）或 "
            "user（auth 认证的身份）, maxClients: 每个端点保留的桶数（默认 "
            "10000）}。超出时在读取请求体之前返回 429 及 Retry-After。同一路径和方法上的流必须使用相同的设置。"),
        see="auth.md#rate-limits",
    ),
    "responseHeaders": Words(
        doc=("Fixed headers added to every answer of the endpoint: successes, errors (401, 429, ... included) and "
            "the CORS preflight of its path; not to 404, 405 or the health and metrics paths, which no endpoint "
            "answers. A mapping of name to value, e.g. {X-Frame-Options: DENY, Cache-Control: no-store}. A name the"
            " server writes itself (Content-Length, Content-Type, Transfer-Encoding, Connection, Keep-Alive, Date, "
            "Vary, Allow, X-Request-Id, Retry-After, WWW-Authenticate, Access-Control-*, Idempotent-Replayed, ...) "
            "is refused at start, as is a value with a control character (CR, LF). Names in this file reach the "
            "plugin lower-cased (HTTP names are case-insensitive). Streams on one path and method must agree on "
            "it."),
        label_en="Response headers",
        label_zh="响应头",
        hint_en=("Fixed headers added to every answer of the endpoint (errors and the CORS preflight included), e.g. "
            "{X-Frame-Options: DENY, Cache-Control: no-store}. Headers the server owns (Content-Length, Content-Type, "
            "Content-Encoding, Connection, Date, Vary, Retry-After, WWW-Authenticate, Access-Control-*, X-Request-Id, "
            "...) cannot be set."),
        hint_zh=("添加到该端点每个响应（包括错误响应和 CORS 预检）的固定响应头，例如 "
            "{X-Frame-Options: DENY, Cache-Control: no-store}。服务器自身负责的响应头（Content-Length、"
            "Content-Type、Content-Encoding、Connection、Date、Vary、Retry-After、"
            "WWW-Authenticate、Access-Control-*、X-Request-Id "
            "等）不能设置。"),
        see="http-answers.md#response-headers",
    ),
    "validation": Words(
        doc=("Check every record against the stream's declared fields before answering, as eKuiper's "
            "STRICT_VALIDATION would: a record eKuiper would drop gets 422 naming the record, field and expected "
            "type, and nothing of the body is delivered. auto (the default): when the stream has "
            "STRICT_VALIDATION=\"true\"; on: also without it; off: never. The fields come from eKuiper's REST API "
            "at each start of the source, else from the property schema. Example: validation: on"),
        label_en="Schema validation",
        label_zh="模式校验",
        hint_en=("Check records against the stream's fields before answering (422 for a record eKuiper's "
            "STRICT_VALIDATION would drop). auto: when the stream has STRICT_VALIDATION; on: always; off: never."),
        hint_zh=("在应答前按流声明的字段校验每条记录（eKuiper 的 STRICT_VALIDATION 会丢弃的记录返回 "
            "422）。auto：流设置了 STRICT_VALIDATION 时；on：总是；off：从不。"),
        see="validation.md",
    ),
    "schema": Words(
        doc=("The stream's fields for validation when eKuiper's REST API cannot be asked (unreachable, or it "
            "requires authentication): eKuiper's own field text as in CREATE STREAM, or a mapping of field name "
            "to type (bigint, float, string, boolean, datetime, bytea, array(T), struct(name T, ...); a nested "
            "mapping is a struct). Example: schema: \"temperature float, tags array(string), pos struct(x bigint, "
            "y bigint)\""),
        label_en="Stream fields",
        label_zh="流字段",
        hint_en=("The stream's fields for validation when eKuiper's REST API is not available, as in CREATE "
            "STREAM, e.g. \"temperature float, tags array(string)\"."),
        hint_zh=("eKuiper REST API 不可用时用于校验的流字段，写法同 CREATE STREAM，例如 "
            "\"temperature float, tags array(string)\"。"),
        see="validation.md",
    ),
}
