"""CORS tried in a real browser: headless Chromium (Debian's ``chromium`` + ``chromedriver``, driven over WebDriver by
``tests/support/browser.py``) loads pages served from other local origins and ``fetch()``es JSON records, with
credentials and with the headers that make it send a preflight, to the plugin inside the session's real eKuiper.

* the listed origin's records reach the rule; the page reads ``X-Request-Id`` (the id the rule sees in
  ``meta(requestId)``) and, on a 429 from the auth backoff, ``Retry-After``; a header the plugin sends but does not
  expose stays hidden from it;
* an ``Idempotency-Key`` sent twice from the page: the second answer is the replay (``Idempotent-Replayed: true``)
  and the rule gets the record once;
* the unlisted origin's requests are blocked: the preflighted one by the browser (the page sees a ``TypeError``, the
  plugin answered the preflight 403 and got no POST), the simple one (``text/plain``, no preflight: the browser does
  send it) by the plugin (403), and nothing is delivered (sentinels).

The pages and the plugin are all on 127.0.0.1 (other ports: other origins), the same address space for Chromium's
Local Network Access rules: no permission and no ``Access-Control-Request-Private-Network`` preflight come into it.
A third page, listed in ``cors.origins`` but which Chromium is told is on a public address
(``--ip-address-space-overrides``), shows what those rules do to a page from the internet: its fetches to the
loopback plugin fail before anything is sent (headless Chromium has no permission prompt), not even a preflight.
One browser session for every case, about 6 s on the session's shared host.
Skipped with the reason where Chromium is missing; under ``CI=true`` it fails (``.ci/run`` installs it).
"""

from __future__ import annotations

import json
import secrets

import pytest

from tests.realhost_support import PLUGIN, Ctx
from tests.support.browser import Browser, PageServer, browser_binaries
from tests.support.http import push, sender
from tests.support.metrics import samples, value
from tests.support.sentinel import assert_sentinel_next_in_sink

#: The page: ``send(url, body, headers)`` fetches with credentials and reports what a page can see of the answer.
PAGE = """<!doctype html><meta charset="utf-8"><title>httppush CORS</title>
<script>
window.send = async (url, body, headers) => {
  try {
    const answer = await fetch(url, {method: "POST", mode: "cors", credentials: "include", headers, body});
    const seen = {};
    for (const name of ["X-Request-Id", "Retry-After", "Idempotent-Replayed", "Vary", "Content-Type"]) {
      seen[name] = answer.headers.get(name);
    }
    return {status: answer.status, headers: seen, body: await answer.text()};
  } catch (e) {
    return {error: e.name + ": " + e.message};
  }
};
</script><p>httppush CORS test page</p>"""

SEND = "return await window.send(args[0], args[1], args[2]);"
TOKEN = secrets.token_hex(8)
JSON = {"Content-Type": "application/json"}


@pytest.mark.realhost
def test_a_browser_page_pushes_through_cors(ctx: Ctx) -> None:
    chromium, chromedriver = browser_binaries()
    with PageServer(PAGE) as listed, PageServer(PAGE) as unlisted, PageServer(PAGE) as public, \
            Browser(chromium, chromedriver, [f"--ip-address-space-overrides=127.0.0.1:{public.port}=public"]
                    ) as browser:
        cors = {"origins": [listed.origin, public.origin], "credentials": True,
                "headers": ["Content-Type", "Idempotency-Key", "Authorization", "X-Forwarded-For"]}
        key = f"cors{secrets.token_hex(3)}"
        ctx.host.put(f"/metadata/sources/{PLUGIN}/confKeys/{key}",
                     {"cors": cors, "idempotency": True, "meta": ["requestId"]})
        stream, path = ctx.stream(f'FORMAT="json", CONF_KEY="{key}"')
        ctx.rule(f"SELECT meta(requestId) AS rid, * FROM {stream}")
        # the auth backoff's 429 (Retry-After) on its own endpoint, for a client behind a trusted proxy: the
        # sentinels, sent from 127.0.0.1 itself, are not backed off
        ctx.host.put(f"/metadata/sources/{PLUGIN}/confKeys/{key}a",
                     {"cors": cors, "auth": {"type": "bearer", "tokens": {"page": TOKEN}}, "meta": ["requestId"],
                      "trustedProxies": ["127.0.0.1"]})
        guarded, gpath = ctx.stream(f'FORMAT="json", CONF_KEY="{key}a"')
        ctx.rule(f"SELECT meta(requestId) AS rid, * FROM {guarded}")
        url, gurl = f"http://127.0.0.1:{ctx.port}{path}", f"http://127.0.0.1:{ctx.port}{gpath}"
        start = samples(ctx.port)

        # -- Chromium's Local Network Access: a page it deems public may not reach a loopback address ----------------
        browser.open(public.url)
        for headers in ({**JSON, "Idempotency-Key": "k-0"}, {"Content-Type": "text/plain"}):  # preflighted, simple
            stopped = browser.run(SEND, url, json.dumps({"n": "public"}), headers)
            assert stopped.get("error", "").startswith("TypeError"), stopped
        before = samples(ctx.port)
        scrape = ("httppush_requests_total", frozenset({("status", "200")}))  # GET /metrics itself
        moved = {name: count - start.get(name, 0.0) for name, count in before.items()
                 if name[0] == "httppush_requests_total" and count != start.get(name, 0.0) and name != scrape}
        assert not moved, moved  # not even a preflight: the browser sent nothing

        # -- the listed origin -------------------------------------------------------------------------------------
        browser.open(listed.url)
        first = browser.run(SEND, url, json.dumps({"n": 1}), {**JSON, "Idempotency-Key": "k-1"})
        assert first.get("status") == 200, first
        rid = first["headers"]["X-Request-Id"]
        assert rid and first["headers"]["Idempotent-Replayed"] is None, first
        # sent, but not exposed: hidden from the page (what makes the exposed ones readable is the plugin's list)
        direct = push(ctx.port, path, b"[", headers={"Origin": listed.origin})  # a 400: nothing delivered
        assert direct.status == 400 and direct.headers.get("Vary") == "Origin", direct
        assert first["headers"]["Vary"] is None, first
        assert ctx.sink.wait_for(1) == [{"rid": rid, "n": 1}]
        again = browser.run(SEND, url, json.dumps({"n": 1}), {**JSON, "Idempotency-Key": "k-1"})
        assert again.get("status") == 200 and again["headers"]["Idempotent-Replayed"] == "true", again
        assert json.loads(again["body"]) == json.loads(first["body"]), (first, again)

        bad = {**JSON, "Authorization": "Bearer wrong", "X-Forwarded-For": "198.51.100.7"}
        refusals = [browser.run(SEND, gurl, json.dumps({"g": i}), bad) for i in range(11)]
        assert [r.get("status") for r in refusals] == [401] * 10 + [429], refusals
        retry_after = refusals[-1]["headers"]["Retry-After"]
        assert retry_after is not None and 1 <= int(retry_after) <= 60, refusals[-1]
        assert all(r["headers"]["X-Request-Id"] for r in refusals), refusals

        # -- an origin that is not listed --------------------------------------------------------------------------
        browser.open(unlisted.url)
        blocked = browser.run(SEND, url, json.dumps({"n": "preflighted"}), {**JSON, "Idempotency-Key": "k-2"})
        assert blocked.get("error", "").startswith("TypeError"), blocked
        simple = browser.run(SEND, url, json.dumps({"n": "simple"}), {"Content-Type": "text/plain"})
        assert simple.get("error", "").startswith("TypeError"), simple

        # -- what the plugin saw -------------------------------------------------------------------------------------
        after = samples(ctx.port)

        def delta(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        answered = {status: delta("httppush_requests_total", method="POST", path=path, status=status)
                    for status in ("200", "400", "403")}
        # the preflighted POST never came; the simple one was refused (without that check it was delivered: 200)
        assert answered == {"200": 2, "400": 1, "403": 1}, answered
        assert delta("httppush_requests_total", status="403") == 1  # the unlisted preflight (no route: OPTIONS)
        assert delta("httppush_idempotent_replays_total", method="POST", path=path) == 1
        guarded_answers = {status: delta("httppush_requests_total", method="POST", path=gpath, status=status)
                           for status in ("401", "429")}
        assert guarded_answers == {"401": 10, "429": 1}, guarded_answers

    # nothing else reached the rules: not the replay, the blocked pushes, the refused ones
    assert_sentinel_next_in_sink(sender(ctx.port, path), ctx.sink, 1)
    assert_sentinel_next_in_sink(sender(ctx.port, gpath, headers={"Authorization": f"Bearer {TOKEN}"}), ctx.sink, 2)

