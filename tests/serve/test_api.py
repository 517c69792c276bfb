"""The server in-process (httpx's ASGI transport, lifespan entered): answers against `beex predict`, dynamic
batching, and every error path of the API as a JSON body that names the problem."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import re

import httpx
import pytest
import serve_helpers
from serve_helpers import run, running_app

from beexformer.cli.main import main
from beexformer.serve.app import ServeConfig, create_app, server_state
from beexformer.serve.schema import Limits

packed_models, served = serve_helpers.packed_models, serve_helpers.served  # the fixtures this module uses

SENTENCES = [
    "a fine film",
    "a dull , tedious film",
    "the best movie of the year",
    "not good at all",
    "film",
    "the year of the dull film , not the best",
    "a a a a good good",
    "tedious",
]


def cli_predict(path, lines, capsys, *extra) -> list[dict]:
    capsys.readouterr()
    assert main(["predict", str(path), *lines, *extra]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def assert_same_as_cli(results: list[dict], expected: list[dict]) -> None:
    assert len(results) == len(expected)
    for got, want in zip(results, expected, strict=True):
        assert got["exit_layer"] == want["exit_block"]
        assert got["label"] == want.get("label")
        assert got["score"] == pytest.approx(want["score"], abs=1e-6)  # the CLI prints 6 decimals
        if got["probabilities"] is not None:
            assert sum(got["probabilities"]) == pytest.approx(1.0, abs=1e-6)


def app_for(served, names=("sst2",), **config):
    return create_app([served[n] for n in names], ServeConfig(**config))


async def post(client, model, body, **kwargs):
    return await client.post(f"/v1/models/{model}/predict", json=body, **kwargs)


# ----------------------------------------------------------------------------------------------------------
# answers


@pytest.mark.parametrize("threshold", [None, -1e9, 10.0])
def test_single_texts_equal_beex_predict(served, packed_models, capsys, threshold):
    extra = [] if threshold is None else ["--threshold", str(threshold)]
    expected = cli_predict(packed_models["sst2"], SENTENCES, capsys, *extra)

    async def go():
        async with running_app(app_for(served)) as client:
            body = {"inputs": SENTENCES} if threshold is None else {"inputs": SENTENCES, "exit_threshold": threshold}
            return await post(client, "sst2", body)

    r = run(go())
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert_same_as_cli(results, expected)
    layers = {x["exit_layer"] for x in results}
    if threshold == -1e9:  # the fractional drop is >= -ln(2) / eps = -7e7: nobody leaves early
        assert layers == {4}
    elif threshold == 10.0:  # ... and <= 1: everybody leaves at the first chance (block 2)
        assert layers == {2}


def test_pairs_and_regression_equal_beex_predict(served, packed_models, capsys, tmp_path):
    pairs = [["a fine film", "the best movie"], ["not good", "a dull film"], ["tedious", "film of the year"]]
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("".join(f"{a}\t{b}\n" for a, b in pairs))

    async def go():
        async with running_app(app_for(served, ("rte", "stsb"))) as client:
            return await post(client, "rte", {"inputs": pairs}), await post(client, "stsb", {"inputs": pairs})

    rte, stsb = run(go())
    assert rte.status_code == 200 and stsb.status_code == 200
    assert_same_as_cli(rte.json()["results"], cli_predict(packed_models["rte"], [], capsys, "--file", str(tsv)))
    regression = stsb.json()["results"]
    expected = cli_predict(packed_models["stsb"], [], capsys, "--file", str(tsv))
    assert [r["label"] for r in regression] == [None] * 3
    assert all("probabilities" not in r for r in regression)
    assert [r["score"] for r in regression] == pytest.approx([e["score"] for e in expected], abs=1e-6)
    assert [r["exit_layer"] for r in regression] == [e["exit_block"] for e in expected]


def test_concurrent_requests_share_batches_and_answer_like_beex_predict(served, packed_models, capsys):
    # A threshold at which these inputs leave at different blocks (the random model's exits vary from one
    # export to the next: the WordPiece trainer breaks ties differently), so that one batch mixes exits.
    for threshold in (0.05, 0.0, 0.2, -0.2, 0.5, -0.5, 0.02, 0.1):
        expected = cli_predict(packed_models["sst2"], SENTENCES, capsys, "--threshold", str(threshold))
        if len({e["exit_block"] for e in expected}) > 1:
            break
    else:
        pytest.fail("no threshold splits the inputs between exits")
    # The batch runs as soon as it is full; the long wait only matters on a machine that stalls.
    app = app_for(served, max_batch=len(SENTENCES), max_wait_ms=5000)
    body = [{"inputs": [s], "exit_threshold": threshold} for s in SENTENCES]

    async def go():
        async with running_app(app) as client:
            replies = await asyncio.gather(*(post(client, "sst2", b) for b in body))
            return replies, server_state(app).batchers["sst2"].batches, (await client.get("/metrics")).text

    replies, batches, metrics = run(go())
    assert all(r.status_code == 200 for r in replies)
    results = [r.json()["results"][0] for r in replies]
    assert_same_as_cli(results, expected)
    assert len({r["exit_layer"] for r in results}) > 1  # inputs of one batch left at different blocks
    assert batches == 1
    assert 'beex_batch_size_count{model="sst2"} 1.0' in metrics
    assert f'beex_batch_size_sum{{model="sst2"}} {float(len(SENTENCES))}' in metrics
    assert 'beex_batch_duration_seconds_count{model="sst2"} 1.0' in metrics
    busy = re.search(r'^beex_batch_duration_seconds_sum\{model="sst2"\} (\S+)$', metrics, re.MULTILINE)
    assert busy and 0 < float(busy.group(1)) < 60
    assert f'beex_exit_layer_count{{model="sst2"}} {float(len(SENTENCES))}' in metrics
    assert 'beex_responses_total{status="200"} 8.0' in metrics
    assert 'beex_queue_depth{model="sst2"} 0.0' in metrics
    assert 'beex_request_duration_seconds_count{route="/v1/models/{name}/predict",status="200"} 8.0' in metrics


def test_max_batch_one_runs_one_batch_per_request(served):
    app = app_for(served, max_batch=1, max_wait_ms=50)

    async def go():
        async with running_app(app) as client:
            replies = await asyncio.gather(*(post(client, "sst2", {"inputs": [s]}) for s in SENTENCES[:4]))
            return replies, server_state(app).batchers["sst2"].batches

    replies, batches = run(go())
    assert [r.status_code for r in replies] == [200] * 4
    assert batches == 4


def test_a_cancelled_request_does_not_disturb_its_batch(served, packed_models, capsys):
    """A client that goes away (its handler cancelled, as a disconnect does) while queued: the others of the
    batch are answered, correctly, and the server goes on."""
    expected = cli_predict(packed_models["sst2"], SENTENCES[:3], capsys)
    app = app_for(served, max_wait_ms=300)

    async def go():
        async with running_app(app) as client:
            tasks = [asyncio.create_task(post(client, "sst2", {"inputs": [s]})) for s in SENTENCES[:4]]
            await asyncio.sleep(0.1)
            tasks[3].cancel()
            replies = await asyncio.gather(*tasks[:3])
            after = await post(client, "sst2", {"inputs": SENTENCES[:1]})
            return replies, after, tasks[3].cancelled()

    replies, after, cancelled = run(go())
    assert cancelled
    assert_same_as_cli([r.json()["results"][0] for r in replies], expected)
    assert after.status_code == 200


def test_models_health_ready_and_openapi(served):
    app = app_for(served, ("sst2", "rte", "stsb"))

    async def go():
        async with running_app(app) as client:
            return {p: await client.get(p) for p in ("/v1/models", "/healthz", "/readyz", "/openapi.json")}

    replies = run(go())
    assert all(r.status_code == 200 for r in replies.values())
    models = {m["name"]: m for m in replies["/v1/models"].json()["models"]}
    assert models["sst2"]["task"] == "sst2" and models["sst2"]["labels"] == ["negative", "positive"]
    assert models["sst2"]["bits"] == {"weights": 1, "activations": 1}
    assert models["rte"]["input"] == "pair" and models["stsb"]["regression"] is True
    assert 0 < models["sst2"]["size"]["file_bytes"] < models["sst2"]["size"]["float32_bytes"]
    spec = replies["/openapi.json"].json()
    assert {route.path for route in app.routes} == set(spec["paths"])


def test_startup_objects_are_frozen_out_of_the_collector_while_serving(served):
    """A full collection must not walk numba's and the models' objects (100 ms pauses under load)."""
    app = app_for(served)
    made_before = [object()]  # a container the collector tracks, alive at start-up

    async def go():
        async with running_app(app) as client:
            reply = await post(client, "sst2", {"inputs": ["a fine film"]})
            tracked = {id(o) for o in gc.get_objects()}  # the frozen generation is not in there
            return reply, gc.get_freeze_count(), id(made_before) in tracked

    reply, frozen, tracked_while_serving = run(go())
    assert reply.status_code == 200
    assert frozen > 10_000 and not tracked_while_serving
    assert gc.get_freeze_count() == 0 and any(o is made_before for o in gc.get_objects())  # given back at stop


def test_readyz_is_503_before_start_and_while_draining(served):
    app = app_for(served)

    async def go():
        import httpx

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            before = await client.get("/readyz")
        async with running_app(app) as client:
            server_state(app).draining = True
            during = await client.get("/readyz")
        return before, during

    before, during = run(go())
    assert before.status_code == 503 and before.json()["status"] == "starting"
    assert during.status_code == 503 and during.json()["status"] == "shutting down"


# ----------------------------------------------------------------------------------------------------------
# errors: status, a JSON body naming the problem, and nothing logged with a traceback


def error_of(reply, status: int, code: str, *words: str) -> None:
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["code"] == code
    for word in words:
        assert word in error["message"]


BAD_BODIES = [
    (b"{not json", 400, "malformed_json", "not valid JSON"),
    (b"\xff\xfe", 400, "malformed_json", "not valid JSON"),
    (b'["a"]', 422, "invalid_request", "JSON object"),
    (b"{}", 422, "invalid_request", '"inputs"'),
    (b'{"inputs": "a text"}', 422, "invalid_request", '"inputs"'),
    (b'{"inputs": []}', 422, "invalid_request", "non-empty"),
    (b'{"inputs": [1, 2]}', 422, "invalid_request", "inputs[0]", "string"),
    (b'{"inputs": ["a", ["b", "c"]]}', 422, "invalid_request", "inputs[1]", "no mixing"),
    (b'{"inputs": [["a", "b"]]}', 422, "invalid_request", "single texts"),
    (b'{"inputs": ["a"], "threshold": 0.1}', 422, "invalid_request", "'threshold'", "exit_threshold"),
    (b'{"inputs": ["a"], "exit_threshold": "high"}', 422, "invalid_request", "exit_threshold"),
    (b'{"inputs": ["a"], "exit_threshold": true}', 422, "invalid_request", "exit_threshold"),
    (b'{"inputs": ["a"], "exit_threshold": NaN}', 422, "invalid_request", "finite"),
]


@pytest.mark.parametrize(("body", "status", "code", "words"), [(b, s, c, w) for b, s, c, *w in BAD_BODIES])
def test_bad_requests(served, caplog, body, status, code, words):
    async def go():
        async with running_app(app_for(served)) as client:
            return await client.post("/v1/models/sst2/predict", content=body)

    with caplog.at_level(logging.DEBUG):
        reply = run(go())
    error_of(reply, status, code, *words)
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def test_pair_model_refuses_single_texts_and_half_pairs(served):
    async def go():
        async with running_app(app_for(served, ("rte",))) as client:
            return await post(client, "rte", {"inputs": ["a"]}), await post(client, "rte", {"inputs": [["a"]]})

    single, half = run(go())
    error_of(single, 422, "invalid_request", "sentence pairs")
    error_of(half, 422, "invalid_request", "inputs[0]", "pair")


def test_unknown_model_route_and_method(served):
    async def go():
        async with running_app(app_for(served)) as client:
            return (
                await post(client, "nope", {"inputs": ["a"]}),
                await client.get("/v2/anything"),
                await client.get("/v1/models/sst2/predict"),
            )

    model, route, method = run(go())
    error_of(model, 404, "unknown_model", "'nope'", "sst2")
    error_of(route, 404, "not_found", "/v2/anything")
    error_of(method, 405, "method_not_allowed")


def test_limits_answer_413_naming_the_limit(served):
    limits = Limits(max_inputs=3, max_text_chars=20, max_body_bytes=200)

    async def chunks():
        for _ in range(30):
            yield b" " * 10  # 300 bytes, streamed without Content-Length

    async def go():
        async with running_app(app_for(served, limits=limits)) as client:
            return (
                await post(client, "sst2", {"inputs": ["a"] * 4}),
                await post(client, "sst2", {"inputs": ["x" * 21]}),
                await client.post("/v1/models/sst2/predict", content=b" " * 201),
                await client.post("/v1/models/sst2/predict", content=chunks()),
                await post(client, "sst2", {"inputs": ["a"] * 3}),
            )

    many, long, big, streamed, fine = run(go())
    error_of(many, 413, "too_many_inputs", "4 inputs", "limit is 3")
    error_of(long, 413, "text_too_long", "21 characters", "limit is 20")
    error_of(big, 413, "body_too_large", "limit is 200 bytes")
    error_of(streamed, 413, "body_too_large", "limit is 200 bytes")
    assert fine.status_code == 200


def test_full_queue_answers_503_with_retry_after(served):
    limits = Limits(max_queue=3)
    app = app_for(served, limits=limits, max_wait_ms=1000)

    async def go():
        async with running_app(app) as client:
            first = asyncio.create_task(post(client, "sst2", {"inputs": SENTENCES[:3]}))
            await asyncio.sleep(0.05)  # the first request waits for its batch to fill: the queue holds 3
            refused = await post(client, "sst2", {"inputs": SENTENCES[:1]})
            return await first, refused, server_state(app).batchers["sst2"].queued

    first, refused, queued_after = run(go())
    assert first.status_code == 200
    error_of(refused, 503, "queue_full", "3 inputs waiting")
    assert refused.headers["retry-after"] == "1"
    assert queued_after == 0


def test_exit_threshold_invalid_for_the_models_rule(served):
    async def go():
        async with running_app(app_for(served, ("cola",))) as client:
            return [await post(client, "cola", {"inputs": ["a"], "exit_threshold": t}) for t in (1.5, 0, 3)]

    fractional, zero, fine = run(go())
    error_of(fractional, 422, "invalid_request", "patience", "integer >= 1")
    error_of(zero, 422, "invalid_request", "patience", "integer >= 1")
    assert fine.status_code == 200 and fine.json()["results"][0]["exit_layer"] == 4  # patience 3 of 4 blocks


def test_api_key(served):
    app = app_for(served, api_key="s3cret-key")

    async def go():
        async with running_app(app) as client:
            body = {"inputs": ["a fine film"]}
            return {
                "none": await post(client, "sst2", body),
                "wrong": await post(client, "sst2", body, headers={"Authorization": "Bearer s3cret-kez"}),
                "prefix": await post(client, "sst2", body, headers={"X-API-Key": "s3cret"}),
                "bearer": await post(client, "sst2", body, headers={"Authorization": "Bearer s3cret-key"}),
                "header": await post(client, "sst2", body, headers={"X-API-Key": "s3cret-key"}),
                "models": await client.get("/v1/models"),
                "metrics": await client.get("/metrics", headers={"X-API-Key": "s3cret-key"}),
                "health": await client.get("/healthz"),
                "ready": await client.get("/readyz"),
            }

    r = run(go())
    for name in ("none", "wrong", "prefix", "models"):
        error_of(r[name], 401, "unauthorized", "API key")
        assert r[name].headers["www-authenticate"] == "Bearer"
    for name in ("bearer", "header", "metrics", "health", "ready"):
        assert r[name].status_code == 200, name
    assert 'beex_responses_total{status="401"} 4.0' in r["metrics"].text


def test_an_engine_failure_is_a_json_500_and_the_server_goes_on(served, monkeypatch):
    """Not bad input but a bug: the client gets a JSON 500 and the next request is served."""
    app = app_for(served)
    model = served["sst2"]
    original = model.predict

    def broken(texts_a, *args):
        if texts_a == ["boom"]:
            raise RuntimeError("kernel failure")
        return original(texts_a, *args)

    async def go():
        async with running_app(app) as client:
            monkeypatch.setattr(model, "predict", broken)
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as raw:
                failed = await post(raw, "sst2", {"inputs": ["boom"]})
            fine = await post(client, "sst2", {"inputs": ["a fine film"]})
            return failed, fine, (await client.get("/metrics")).text

    failed, fine, metrics = run(go())
    error_of(failed, 500, "internal_error", "RuntimeError")
    assert fine.status_code == 200
    assert 'beex_responses_total{status="500"} 1.0' in metrics


@pytest.mark.parametrize("threads", [1, 2, None])
def test_threads_apply_to_the_inference_thread(served, threads):
    """numba's thread count is per thread: the engine runs in the server's inference thread, which must get it."""
    import numba

    app = app_for(served, threads=threads)

    async def go():
        async with running_app(app):
            executor = server_state(app).executor
            return await asyncio.get_running_loop().run_in_executor(executor, numba.get_num_threads)

    from beexformer.serve.model import default_threads

    want = default_threads() if threads is None else threads  # None: every core
    assert run(go()) == min(want, numba.config.NUMBA_NUM_THREADS)
