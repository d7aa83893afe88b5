"""polyalign serve: every route, the same ranking as `polyalign search`, batching, limits, bad inputs, the token,
and the search page in a real browser (headless Chromium)."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import RECIPES
from fastapi.testclient import TestClient
from PIL import Image

import polyalign
from polyalign.cli import main
from polyalign.core.errors import MAX_MESSAGE_CHARS, PolyalignError
from polyalign.inference.export import export_model
from polyalign.inference.search import index_to_file, search_sources
from polyalign.inference.vector_index import IndexOptions
from polyalign.serving.app import create_app
from polyalign.serving.batching import MicroBatcher
from polyalign.serving.candidates import load_candidates
from polyalign.serving.jobs import Done, Job, run_jobs
from polyalign.serving.limits import Limits
from polyalign.serving.values import upload_value

# the demo recipe, shrunk to train in a second or two: one epoch of 32 tuples, tiny encoders
TINY = ["data.n_train=32", "data.n_val=8", "data.n_test=12", "data.classes=2", "eval=[]",
        "modalities.image.encoder.model=test_resnet", "modalities.image.encoder.image_size=16",
        "modalities.text.encoder.dim=16", "modalities.text.encoder.layers=1", "modalities.text.encoder.heads=2",
        "modalities.audio.encoder.channels=[4,8]", "modalities.ecg.encoder.base_width=4",
        "modalities.ecg.encoder.blocks=[1,1]", "train.epochs=1", "train.batch_size=16", "train.warmup_steps=0"]
QUERY_FILES = {"audio": "audio/test-00000.wav", "ecg": "ecg/test-00000.npy"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A tiny demo model, exported; its data folder; an index of its test images."""
    root = tmp_path_factory.mktemp("serve")
    run = polyalign.train(RECIPES / "demo-multimodal.yaml", out=root / "runs",
                          overrides=TINY + [f"data.path={root / 'data'}"])
    export = export_model(run, root / "export")
    model = polyalign.load(export, device="cpu")
    index_to_file(model, "image", root / "data" / "test.jsonl", root / "images.faiss", IndexOptions())
    return {"export": export, "data": root / "data", "index": root / "images.faiss", "model": model}


@pytest.fixture(scope="module")
def client(demo):
    candidates = load_candidates(demo["model"], [f"image={demo['data'] / 'test.jsonl'}",
                                                 f"text={demo['data'] / 'test.jsonl'}"], [])
    with TestClient(create_app(demo["model"], candidates, Limits(max_values=8, max_k=10))) as c:
        yield c


def uploads(demo, modalities=QUERY_FILES) -> list:
    return [(m, (f"q{m}{demo['data'].joinpath(p).suffix}", demo["data"].joinpath(p).read_bytes()))
            for m, p in modalities.items()]


def cli_ranking(argv: list[str], capsys) -> list[str]:
    capsys.readouterr()
    assert main(argv) == 0
    rows = [line.split("│") for line in capsys.readouterr().out.splitlines() if line.count("│") >= 4]
    return [r[2].strip() for r in rows if r[1].strip().isdigit()]


@pytest.mark.parametrize("kind", ["source", "index"])
def test_search_ranks_as_the_cli_does(demo, capsys, kind):
    """(audio, ecg) -> image over HTTP, uploaded files, against `polyalign search` with the same files."""
    given = [f"image={demo['data'] / 'test.jsonl'}"] if kind == "source" else []
    indexes = [f"image={demo['index']}"] if kind == "index" else []
    app = create_app(demo["model"], load_candidates(demo["model"], given, indexes))
    with TestClient(app) as c:
        answer = c.post("/search", files=uploads(demo), data={"target": "image", "k": "5"})
    assert answer.status_code == 200, answer.text
    result = answer.json()
    source = str(demo["index"]) if kind == "index" else str(demo["data"] / "test.jsonl")
    queries = [f"{m}={demo['data'] / p}" for m, p in QUERY_FILES.items()]
    expected = search_sources(demo["model"], queries, f"image={source}", top_k=5)
    assert [h["id"] for h in result["hits"]] == [h.id for h in expected.hits]
    assert [h["score"] for h in result["hits"]] == pytest.approx([h.score for h in expected.hits], abs=1e-5)
    argv = ["search", str(demo["export"]), *[a for q in queries for a in ("--query", q)],
            "--candidates", f"image={source}", "--top", "5", "--device", "cpu"]
    assert cli_ranking(argv, capsys) == [str(h["id"]) for h in result["hits"]]
    assert result["ranking"] == ("exact" if kind == "source" else "flat") and result["candidates"] == 12
    assert result["hits"][0]["media"] == f"/items/image/{result['hits'][0]['row']}"  # the index finds its files too


def test_health_info_metrics(client, demo):
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/info").json()
    assert info["modalities"] == ["image", "text", "audio", "ecg"] and info["embed_dim"] == demo["model"].embed_dim
    assert info["scored_by"] == "ClipLoss.score" and info["loss"] == [{"plugin": "clip", "weight": 1.0}]
    assert {p["name"] for p in info["plugins"]} == {"image", "byte_text", "audio", "ecg", "clip"}
    assert {c["modality"]: (c["count"], c["distinct"]) for c in info["candidates"]} == {"image": (12, 12),
                                                                                        "text": (12, 12)}
    client.post("/embed", json={"values": {"text": ["a red circle"]}})
    client.post("/embed", json={"values": {"nope": ["x"]}})
    text = client.get("/metrics").text
    assert 'polyalign_requests_total{route="/embed",status="200"}' in text
    assert 'polyalign_errors_total{route="/embed",status="422"}' in text
    assert 'polyalign_request_seconds_bucket{le="0.001",route="/embed"}' in text
    assert "polyalign_batch_requests_count" in text and "polyalign_batch_values_sum" in text


def test_embed_json_and_uploads_equal_the_library(client, demo):
    model, data = demo["model"], demo["data"]
    texts = ["a red circle", "a blue square"]
    answer = client.post("/embed", json={"values": {"text": texts, "ecg": [np.zeros((12, 400)).tolist()]}})
    assert answer.status_code == 200, answer.text
    got = answer.json()["embeddings"]
    assert np.allclose(got["text"], model.embed({"text": texts})["text"].numpy(), atol=1e-5)
    assert np.allclose(got["ecg"], model.embed({"ecg": [np.zeros((12, 400))]})["ecg"].numpy(), atol=1e-5)
    files = uploads(demo, {"image": "image/test-00001.png", "audio": "audio/test-00001.wav"})
    got = client.post("/embed", files=files, data={"text": "a red circle"}).json()["embeddings"]
    for m in ("image", "audio"):
        path = data / {"image": "image/test-00001.png", "audio": "audio/test-00001.wav"}[m]
        assert np.allclose(got[m], model.embed({m: [path]})[m].numpy(), atol=1e-5)
    assert np.allclose(got["text"], model.embed({"text": ["a red circle"]})["text"].numpy(), atol=1e-5)
    caption = data / "text" / "test-00001.txt"  # a request's text names a file on the server: still text
    got = client.post("/embed", json={"values": {"text": [str(caption)]}}).json()["embeddings"]
    assert np.allclose(got["text"], model.embed({"text": [str(caption)]})["text"].numpy(), atol=1e-5)
    assert not np.allclose(got["text"], model.embed({"text": [caption]})["text"].numpy(), atol=1e-3)


def test_items_serve_the_candidates_files_only(client, demo):
    hits = client.post("/search", json={"query": {"text": "red"}, "target": "image", "k": 3}).json()["hits"]
    picture = client.get(hits[0]["media"])
    assert picture.headers["content-type"] == "image/png"
    assert picture.content == (demo["data"] / hits[0]["value"]).read_bytes()
    assert client.get("/items/image/12").status_code == 404  # past the last candidate
    assert client.get("/items/audio/0").status_code == 404  # no candidates of audio
    assert client.get("/items/image/..%2F..%2Fetc%2Fpasswd").status_code == 404  # a row is a number, never a path
    assert client.get("/items/image/hosts").status_code == 422
    texts = client.post("/search", json={"query": {"image": None}, "target": "text"})
    assert texts.status_code == 422


def corrupt_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, format="PNG")
    return buffer.getvalue()[:40]


JSON = {"content-type": "application/json"}
BAD = {  # name: (method args, status, words of the message)
    "wrong type": ({"files": [("image", ("notes.txt", b"hello", "text/plain"))]}, 422, "cannot decode image"),
    "corrupt image": ({"files": [("image", ("cut.png", corrupt_png(), "image/png"))]}, 422, "cannot decode image"),
    "NaN vector": ({"content": b'{"values": {"ecg": [[[0.5, NaN]]]}}', "headers": JSON}, 422, "NaN or infinity"),
    "infinite vector": ({"content": b'{"values": {"ecg": [[1e400]]}}', "headers": JSON}, 422, "NaN or infinity"),
    "unknown modality": ({"json": {"values": {"smell": ["roses"]}}}, 422, "'smell' is not a modality"),
    "a path": ({"json": {"values": {"image": ["/etc/hostname"]}}}, 422, "a str is text, never a path"),
    "a text path": ({"json": {"values": {"text": ["/etc/hostname.txt"]}}}, 200, ""),
    "a string in numbers": ({"json": {"values": {"ecg": [["/etc/x.npy"]]}}}, 422, "only numbers"),
    "empty upload": ({"files": [("audio", ("a.wav", b"", "audio/wav"))]}, 422, "modality 'audio', value 0"),
    "ecg not npy": ({"files": [("ecg", ("e.csv", b"1,2", "text/csv"))]}, 422, "modality 'ecg'"),
    "too many values": ({"json": {"values": {"text": ["x"] * 9}}}, 413,
                        "the limit is 8 (polyalign serve --max-values)"),
    "too many files": ({"files": [("text", (f"{i}.txt", b"x")) for i in range(9)]}, 413, "--max-values"),
    "not JSON": ({"content": b"{values", "headers": JSON}, 400, "not valid JSON"),
    "nested too deeply": ({"content": b"[" * 100000, "headers": JSON}, 400, "not valid JSON"),
    "no values key": ({"json": {"text": ["x"]}}, 422, "'values'"),
    "no values": ({"json": {"values": {}}}, 422, "no values given"),
    "values not a list": ({"json": {"values": {"text": "x"}}}, 422, "must be a list"),
    "wrong content type": ({"content": b"x", "headers": {"content-type": "text/plain"}}, 415, "not accepted"),
    "null value": ({"json": {"values": {"text": [None]}}}, 422, "is no value"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_embed_requests_get_a_4xx_and_the_server_keeps_serving(client, case):
    kwargs, status, words = BAD[case]
    answer = client.post("/embed", **kwargs)
    assert answer.status_code == status, answer.text
    assert words in answer.json()["detail"] if status != 200 else "embeddings" in answer.json()
    assert client.post("/embed", json={"values": {"text": ["still serving"]}}).status_code == 200


BAD_SEARCH = {
    "k above the limit": ({"query": {"text": "red"}, "target": "image", "k": 11}, 422, "above the limit of 10"),
    "k not a number": ({"query": {"text": "red"}, "target": "image", "k": "many"}, 422, "k must be a whole number"),
    "k zero": ({"query": {"text": "red"}, "target": "image", "k": 0}, 422, "k must be a whole number"),
    "no target": ({"query": {"text": "red"}}, 422, "give the target modality"),
    "target without candidates": ({"query": {"text": "red"}, "target": "audio"}, 422, "no candidates of 'audio'"),
    "unknown target": ({"query": {"text": "red"}, "target": "smell"}, 422, "'smell' is not a modality"),
    "target in the query": ({"query": {"image": "x"}, "target": "image"}, 422, "both a target and a query"),
    "target not a name": ({"query": {"text": "red"}, "target": [1]}, 422, "give the target modality"),
    "no query": ({"query": {}, "target": "image"}, 422, "no values given"),
    "NaN query": ({"query": {"ecg": [[float("nan")]]}, "target": "image"}, 422, "NaN or infinity"),
}


@pytest.mark.parametrize("case", list(BAD_SEARCH))
def test_bad_searches_get_a_4xx(client, case):
    body, status, words = BAD_SEARCH[case]
    answer = client.post("/search", content=json.dumps(body).encode(), headers=JSON)
    assert answer.status_code == status and words in answer.json()["detail"], answer.text
    assert client.post("/search", json={"query": {"text": "red"}, "target": "image", "k": 2}).status_code == 200


def test_search_for_candidate_tuples_scores_them_together(client, demo):
    """target [image, text]: each test row's image and text together, scored by the run's rule for tuples."""
    rows = [json.loads(line) for line in (demo["data"] / "test.jsonl").read_text().splitlines()]
    audio = demo["data"] / QUERY_FILES["audio"]
    expected = demo["model"].search({"audio": [audio]}, {"image": [Path(r["image"]) for r in rows],
                                                         "text": [Path(r["text"]) for r in rows]},
                                    top_k=4, root=demo["data"])
    for target in (["image", "text"], "image,text"):
        answer = client.post("/search", files=uploads(demo, {"audio": QUERY_FILES["audio"]}),
                             data={"target": "image,text", "k": "4"}) if isinstance(target, str) else client.post(
            "/search", json={"query": {"ecg": np.ones((12, 400)).tolist()}, "target": target, "k": 4})
        assert answer.status_code == 200, answer.text
        result = answer.json()
        assert result["target"] == ["image", "text"] and set(result["hits"][0]["media"]) == {"image", "text"}
        if isinstance(target, str):
            assert [h["row"] for h in result["hits"]] == [h.index for h in expected[0]]
            assert [h["score"] for h in result["hits"]] == pytest.approx([h.score for h in expected[0]], abs=1e-5)


def repeated_captions(demo) -> Path:
    """The demo's test manifest with every third caption replaced by one inline text: four rows share it."""
    rows = [json.loads(line) for line in (demo["data"] / "test.jsonl").read_text().splitlines()]
    for i in range(0, len(rows), 3):
        rows[i]["text"] = "a red circle"
    path = demo["data"] / "repeated.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_hits_carry_label_and_text_and_each_value_is_shown_once(demo, capsys):
    """A caption shared by four rows is one hit naming the other three; every hit has its label and text."""
    manifest = repeated_captions(demo)
    rows = {r["id"]: r for r in map(json.loads, manifest.read_text().splitlines())}
    shared = sorted(i for i, r in rows.items() if r["text"] == "a red circle")
    app = create_app(demo["model"], load_candidates(demo["model"], [f"text={manifest}"], []))
    with TestClient(app) as c:
        assert c.get("/info").json()["candidates"][0] | {"source": ""} == {
            "modality": "text", "count": 12, "distinct": 9, "source": "", "ranking": "exact"}
        answer = c.post("/search", files=uploads(demo), data={"target": "text", "k": "12"})
        assert answer.status_code == 200, answer.text
        result = answer.json()
    hits = result["hits"]
    assert result["distinct"] == 9 and len(hits) == 9 and [h["rank"] for h in hits] == list(range(1, 10))
    assert len({h["text"] for h in hits}) == 9  # no text twice
    top = next(h for h in hits if h["text"] == "a red circle")  # its four rows are one hit
    assert sorted([top["id"], *top["same_value"]]) == shared
    for hit in hits:
        row = rows[hit["id"]]
        assert hit["label"] == row["label"]
        caption = row["text"] if hit["id"] in shared else (demo["data"] / row["text"]).read_text().strip()
        assert hit["text"] == caption and (hit["same_value"] == [] or hit is top)

    queries = [f"{m}={demo['data'] / p}" for m, p in QUERY_FILES.items()]
    expected = search_sources(demo["model"], queries, f"text={manifest}", top_k=9)
    assert [h.id for h in expected.hits] == [h["id"] for h in hits]
    assert [list(h.same) for h in expected.hits] == [h["same_value"] for h in hits]
    capsys.readouterr()
    assert main(["search", str(demo["export"]), *[a for q in queries for a in ("--query", q)],
                 "--candidates", f"text={manifest}", "--top", "9", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "label" in out and "text" in out and "same value as" in out
    caption = next(h for h in hits if h is not top)
    assert caption["text"] in out and rows[caption["id"]]["text"] not in out  # a caption's text, not its path
    assert "3 of the 12 candidates repeat another's value" in out


def test_an_upload_of_the_wrong_type_is_told_plainly_and_an_empty_form_query_says_what_to_send(client):
    for modality, name in (("image", "notes.txt"), ("audio", "notes.png")):
        answer = client.post("/search", files=[(modality, (name, b"hello"))], data={"target": "text"})
        detail = answer.json()["detail"]
        assert answer.status_code == 422 and f"upload {name}" in detail, detail
        assert "object at 0x" not in detail and ".." not in detail, detail
    answer = client.post("/search", files=[("target", (None, "image"))])
    assert answer.status_code == 422 and "/embed" not in answer.json()["detail"] and "values" not in answer.json()[
        "detail"].removeprefix("no values given")
    assert "a file or text for at least one modality other than the target" in answer.json()["detail"]


def test_search_takes_one_value_per_query_modality(client, demo):
    files = uploads(demo) + uploads(demo, {"audio": "audio/test-00001.wav"})
    answer = client.post("/search", files=files, data={"target": "image"})
    assert answer.status_code == 422 and "give one value of 'audio', not 2" in answer.json()["detail"]


def test_body_limit_and_token(demo):
    app = create_app(demo["model"], {}, Limits(max_body_mb=0.01), token="s3cret")
    with TestClient(app) as c:
        assert c.get("/health").status_code == 200 and c.get("/").status_code == 200  # the page asks for the token
        for route in ("/info", "/metrics"):
            assert c.get(route).status_code == 401
            assert c.get(route, headers={"Authorization": "Bearer wrong"}).status_code == 401
        answer = c.post("/embed", json={"values": {"text": ["x"]}})
        assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
        auth = {"Authorization": "Bearer s3cret"}
        assert c.get("/info", headers=auth).status_code == 200
        big = c.post("/embed", json={"values": {"text": ["x" * 20000]}}, headers=auth)
        assert big.status_code == 413 and "limit of 0.01 MB (polyalign serve --max-body-mb)" in big.json()["detail"]

        def chunks():  # no Content-Length: the limit holds while the body streams in
            yield b'{"values": {"text": ["'
            for _ in range(20):
                yield b"x" * 1000
            yield b'"]}}'
        streamed = c.post("/embed", content=chunks(), headers={**auth, **JSON})
        assert streamed.status_code == 413
        assert c.post("/embed", json={"values": {"text": ["x"]}}, headers=auth).status_code == 200


@pytest.mark.parametrize("exc, status, start", [
    (ValueError("v" * 100_000), 500, "unexpected ValueError (a bug in polyalign or a plugin): vvv"),
    (PolyalignError("p" * 100_000 + "; do this"), 422, "ppp")])
def test_a_long_error_is_answered_cut_once(demo, monkeypatch, exc, status, start):
    """A bug's message, or a polyalign error's, is cut once (to MAX_MESSAGE_CHARS, the note of the cut included)."""
    def fail(modality):
        raise exc

    monkeypatch.setattr(demo["model"], "check_modality", fail)
    with TestClient(create_app(demo["model"], {}, Limits()), raise_server_exceptions=False) as c:
        answer = c.post("/embed", json={"values": {"text": ["a red circle"]}})
    detail = answer.json()["detail"]
    assert answer.status_code == status and detail.startswith(start) and detail.count("characters cut ...]") == 1
    assert len(detail) <= MAX_MESSAGE_CHARS and detail.endswith("v" * 50 if status == 500 else "; do this")

def test_page_is_served_without_a_cdn(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for route in ("/", "/page.js", "/page.css"):
        text = client.get(route).text
        assert "http://" not in text and "https://" not in text  # nothing fetched from elsewhere


def test_a_batch_runs_concurrent_requests_together_and_isolates_bad_values(demo):
    model = demo["model"]
    jobs = [Job({"text": ["red"]}),
            Job({"image": [upload_value(b"garbage", "x.png", None)]}),
            Job({"text": ["blue", "red"]})]
    done = run_jobs(model, {}, jobs)
    assert isinstance(done[0], Done) and isinstance(done[2], Done) and isinstance(done[1], Exception)
    assert torch.allclose(done[0].embeddings["text"], done[2].embeddings["text"][1:], atol=1e-5)
    seen = []

    def run(items: list[int]) -> list:
        seen.append(len(items))
        return [ValueError("odd") if i % 2 else i * 10 for i in items]

    async def go():
        batcher = MicroBatcher(run, max_batch=4, max_wait=0.05)
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(i) for i in range(10)), return_exceptions=True)
        finally:
            await batcher.stop()
    results = asyncio.run(go())
    assert [r if not isinstance(r, Exception) else "error" for r in results] == [
        0, "error", 20, "error", 40, "error", 60, "error", 80, "error"]
    assert max(seen) == 4 and sum(seen) == 10 and len(seen) <= 4  # batched, never above max_batch


def test_cli_serve_refuses_a_busy_port_and_imports_no_server_at_start(demo, capsys):
    probe = ("import sys, polyalign.cli; polyalign.cli.parser(); "
             "print(sorted({'fastapi', 'uvicorn'} & set(sys.modules)))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", str(demo["export"]), "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
    assert main(["serve", str(demo["export"]), "--port", "0", "--candidates", "smell=x.jsonl"]) == 2
    assert "'smell' is not a modality" in capsys.readouterr().err
    assert main(["serve", str(demo["export"]), "--port", "0", "--index", f"image={demo['data'] / 'test.jsonl'}"]) == 2
    assert "an index file ends in .faiss" in capsys.readouterr().err


CHROMIUM, DRIVER = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
needs_chromium = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver "
                                                                       "(.ci/run installs them)")


@pytest.fixture
def server(demo):
    """The demo model served by uvicorn on a free local port, in a thread; its base URL."""
    import uvicorn

    candidates = load_candidates(demo["model"], [f"image={demo['data'] / 'test.jsonl'}"], [])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    instance = uvicorn.Server(uvicorn.Config(create_app(demo["model"], candidates), log_level="warning"))
    thread = threading.Thread(target=instance.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not instance.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert instance.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    instance.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture
def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@needs_chromium
@pytest.mark.browser
@pytest.mark.slow
def test_page_in_a_browser_uploads_a_file_and_shows_images(server, browser, demo):
    """The page in headless Chromium: pick modalities, upload a file, type text, see the top-k images."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser.get(server + "/")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".query")) == 4)
    rows = {row.get_attribute("data-modality"): row for row in browser.find_elements(By.CSS_SELECTOR, ".query")}
    browser.find_element(By.ID, "go").click()  # nothing given: said on the page, nothing sent
    assert browser.find_element(By.ID, "status").text.startswith("no query: upload a file or type a value")
    rows["image"].find_element(By.CSS_SELECTOR, ".use").click()  # the only target is now in the query
    assert not browser.find_element(By.ID, "go").is_enabled()
    assert "untick one" in browser.find_element(By.ID, "target-note").text
    rows["image"].find_element(By.CSS_SELECTOR, ".use").click()
    assert browser.find_element(By.ID, "go").is_enabled() and not browser.find_element(By.ID, "target-note").text
    rows["audio"].find_element(By.CSS_SELECTOR, ".file").send_keys(str(demo["data"] / "audio" / "test-00000.wav"))
    wait.until(lambda d: rows["audio"].find_elements(By.CSS_SELECTOR, ".preview audio"))  # the upload, playable
    rows["text"].find_element(By.CSS_SELECTOR, ".text").send_keys("a red circle")
    Select(browser.find_element(By.ID, "target")).select_by_value("image")
    k = browser.find_element(By.ID, "k")
    k.clear()
    k.send_keys("3")
    browser.find_element(By.ID, "go").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .hit img")) == 3)
    wait.until(lambda d: all(d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)
                             for img in d.find_elements(By.CSS_SELECTOR, "#results .hit img")))
    status = browser.find_element(By.ID, "status").text
    assert "best 3 image of 12 for audio + text" in status
    ids = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#results .hit .id")]
    assert len(ids) == 3 and all(i.startswith("test-") for i in ids)
    labels = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#results .hit .score")]
    assert all(t.startswith("label ") for t in labels), labels  # the manifest's label of each hit

    # a bad upload shows the server's message on the page, and the page keeps working
    bad = demo["data"] / "bad.png"
    bad.write_bytes(b"not a picture")
    rows["audio"].find_element(By.CSS_SELECTOR, ".use").click()  # audio off again
    browser.find_element(By.CSS_SELECTOR, ".query[data-modality=ecg] .file").send_keys(str(bad))
    browser.find_element(By.ID, "go").click()
    wait.until(lambda d: "422" in d.find_element(By.ID, "status").text)
    assert "modality 'ecg'" in browser.find_element(By.ID, "status").text
