"""The retrieval service (deploy/serve.py) over HTTP, one process for the
module on a copy of the demo set: search equals predict.py; adds and
removals persist and equal a rebuild; images, thumbnails, metrics, the
OpenAPI description; every bad input is a 4xx JSON error of one line that
leaves the service up and the database as it was."""
import io
import os

import httpx
import numpy as np
import pytest
from PIL import Image

from support.cli import run_in_process
from support.errors import assert_cli_error
from support.service import TOKEN, predicted_ranking, start_service, stop

MAX_PIXELS, MAX_BODY_MB = 10_000, 1


@pytest.fixture(scope="module")
def service(demo, trained, tmp_path_factory):
    running = start_service(demo, trained.prefix, tmp_path_factory.mktemp("service"),
                            "--max-image-pixels", str(MAX_PIXELS),
                            "--max-body-mb", str(MAX_BODY_MB))
    yield running
    stop(running)


@pytest.fixture(scope="module")
def client(service):
    with httpx.Client(base_url=service.url, timeout=120) as c:
        yield c


def image_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def search(client, **form):
    files = {"image": ("q.png", form.pop("image"), "image/png")} if "image" in form else None
    response = client.post("/search", data={k: str(v) for k, v in form.items()}, files=files)
    assert response.status_code == 200, response.text
    return response.json()


def ranking(answer):
    return [(r["id"], r["distance"]) for r in answer["results"]]


def database_size(client):
    return client.get("/health").json()["database_size"]


def list_text(service):
    with open(os.path.join(service.list_dir, "database.txt")) as f:
        return f.read()


def test_health_names_the_model_index_and_database(client, demo):
    health = client.get("/health").json()
    assert health["ready"] is True and health["arch"] == "alexnet" and health["bit"] == 16
    assert health["index"] == "exact:scan" and health["mutations"] == "token"
    assert len(health["fingerprint"]) == 64
    assert health["database_size"] == demo.counts["database"]


def test_search_by_upload_equals_predict_py(client, service, demo, trained, outside_query,
                                            tmp_path, capsys):
    answer = search(client, image=image_bytes(outside_query), topk=10)["queries"][0]
    assert ranking(answer) == predicted_ranking(service, demo, trained.prefix, outside_query,
                                                tmp_path, capsys)
    assert len(answer["code"]) == 16 and set(answer["code"]) <= {"0", "1"}
    distances = [d for _, d in ranking(answer)]
    assert distances == sorted(distances)


def test_search_by_ids_uses_their_codes_and_the_radius(client, trained):
    result = search(client, ids="0, 5", topk=48)
    assert [a["query"]["id"] for a in result["queries"]] == [0, 5]
    for answer in result["queries"]:
        assert answer["results"][0] == {"id": answer["query"]["id"], "distance": 0,
                                        "path": answer["query"]["path"],
                                        "labels": answer["results"][0]["labels"]}
    near = search(client, ids="5", topk=48, radius=4)["queries"][0]["results"]
    everything = result["queries"][1]["results"]
    assert near == [r for r in everything if r["distance"] <= 4] and len(near) < len(everything)
    codes = trained.codes   # the stored code of id 5 is its code
    assert result["queries"][1]["code"] == "".join("1" if b > 0 else "0" for b in codes[5])


def test_added_image_is_found_and_removed_image_is_gone(client, service, outside_query):
    before, text = database_size(client), list_text(service)
    response = client.post("/images", files=[("images", ("new.png", image_bytes(outside_query),
                                                        "image/png"))],
                           data={"labels": "1 2"}, headers=service.auth)
    assert response.status_code == 200, response.text
    [added] = response.json()["added"]
    assert added["id"] == before and added["path"].startswith("uploads/")
    assert list_text(service).endswith(f"{added['path']} 0 1 1 0 0 0 0 0 0 0\n")
    top = search(client, image=image_bytes(outside_query), topk=3)["queries"][0]["results"][0]
    assert top == {"id": before, "path": added["path"], "distance": 0, "labels": [1, 2]}
    response = client.delete(f"/images/{before}", headers=service.auth)
    assert response.json()["removed"] == [{"id": before, "path": added["path"]}]
    results = search(client, image=image_bytes(outside_query), topk=48)["queries"][0]["results"]
    assert before not in [r["id"] for r in results]
    assert database_size(client) == before and list_text(service) == text


def test_adds_and_removals_persist_and_equal_a_rebuild(client, service, demo, trained,
                                                       outside_query, tmp_path, capsys):
    """Two adds (an upload, a path under the root) and a batch removal: the
    list, the code cache and the ranking equal predict.py's rebuild on the
    list that results."""
    n = database_size(client)
    client.post("/images", files=[("images", ("q.png", image_bytes(outside_query), "image/png"))],
                headers=service.auth).raise_for_status()
    client.post("/images", data={"paths": "images/000060.jpg\nimages/000061.jpg"},
                headers=service.auth).raise_for_status()
    removed = client.delete("/images", params={"ids": [0, 7, n + 1]}, headers=service.auth)
    assert [r["id"] for r in removed.json()["removed"]] == [0, 7, n + 1]
    assert database_size(client) == n + 3 - 3
    lines = list_text(service).splitlines()
    assert len(lines) == n and lines[-2].startswith("uploads/") and \
        lines[-1].startswith("images/000061.jpg")
    with np.load(os.path.join(service.save_path, "database_code_demo_16.npz")) as cache:
        assert len(cache["packed"]) == n
    served = ranking(search(client, image=image_bytes(outside_query), topk=10)["queries"][0])
    assert served == predicted_ranking(service, demo, trained.prefix, outside_query, tmp_path,
                                       capsys, "--rebuild_cache")


def test_images_and_cached_thumbnails(client, service):
    answer = client.post("/search", data={"ids": "2", "topk": "1"}).json()["queries"][0]
    path = answer["query"]["path"]
    image = client.get("/images/2")
    assert image.status_code == 200 and image.content == image_bytes(os.path.join(service.root,
                                                                                  path))
    thumb = client.get("/thumbs/2")
    assert thumb.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumb.content)).size) <= 160
    cached = os.listdir(os.path.join(service.save_path, "thumbs"))
    assert client.get("/thumbs/2").content == thumb.content
    assert os.listdir(os.path.join(service.save_path, "thumbs")) == cached


def test_metrics_count_requests_latency_errors_and_size(client):
    client.post("/search", data={"ids": "1"})
    client.post("/search", data={"ids": "100000"})
    text = client.get("/metrics").text
    assert 'hashnet_requests_total{code="200",endpoint="/search",method="POST"}' in text
    assert 'hashnet_request_seconds_bucket{endpoint="/search",le="0.1"}' in text
    assert 'hashnet_errors_total{code="404",endpoint="/search"}' in text
    assert f"hashnet_database_size {float(database_size(client))}" in text


def test_openapi_describes_every_endpoint(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/health", "/search", "/images", "/images/{image_id}", "/thumbs/{image_id}",
            "/metrics"} <= set(paths)
    assert set(paths["/images"]) == {"post", "delete"}


def test_page_is_served_and_loads_only_from_the_service(client):
    page = client.get("/").text
    assert "<title>HashNet retrieval</title>" in page
    for asset in ("/static/app.js", "/static/style.css"):
        assert asset in page and client.get(asset).status_code == 200
    assert "http" not in page and "http" not in client.get("/static/app.js").text


def big_png(side):
    out = io.BytesIO()
    Image.new("RGB", (side, side), (90, 120, 30)).save(out, "PNG")
    return out.getvalue()


def bad_request(client, service, case):
    """The request of each bad input -> (expected status, a word of the message)."""
    png = big_png(20)
    search_form = {"topk": "5"}
    cases = {
        "non_image": lambda: (client.post("/search", data=search_form,
                                          files={"image": ("a.png", b"not an image", "image/png")}),
                              400, "unreadable"),
        "over_pixel_limit": lambda: (client.post("/search", data=search_form, files={
            "image": ("a.png", big_png(200), "image/png")}), 400, "pixels"),
        "body_over_cap": lambda: (client.post("/search", files={"image": (
            "a.png", os.urandom(MAX_BODY_MB * 2 << 20), "image/png")}), 413, "MiB"),
        "topk_zero": lambda: (client.post("/search", data={"ids": "1", "topk": "0"}), 422, "topk"),
        "topk_over": lambda: (client.post("/search", data={"ids": "1", "topk": "1001"}), 422,
                              "topk"),
        "unknown_id_search": lambda: (client.post("/search", data={"ids": "99999"}), 404,
                                      "no image 99999"),
        "unknown_id_delete": lambda: (client.delete("/images/99999", headers=service.auth), 404,
                                      "no image 99999"),
        "unknown_id_image": lambda: (client.get("/images/99999"), 404, "no image 99999"),
        "non_image_add": lambda: (client.post("/images", files={"images": (
            "a.jpg", b"not an image", "image/jpeg")}, headers=service.auth), 400, "unreadable"),
        "path_not_an_image": lambda: (client.post("/images", data={"paths": "notes.jpg"},
                                                  headers=service.auth), 400, "unreadable"),
        "path_outside_root": lambda: (client.post("/images", data={"paths": "../lists/test.txt"},
                                                  headers=service.auth), 400, "outside"),
        "link_outside_root": lambda: (client.post("/images", data={"paths": "escape.jpg"},
                                                  headers=service.auth), 400, "outside"),
        "missing_token": lambda: (client.post("/images", files={"images": ("a.png", png)}), 401,
                                  "token"),
        "wrong_token": lambda: (client.delete("/images/0", headers={
            "Authorization": "Bearer " + TOKEN + "x"}), 401, "token"),
        "malformed_multipart": lambda: (client.post("/search", content=b"garbage--xx", headers={
            "Content-Type": "multipart/form-data; boundary=xx"}), 400, "multipart"),
    }
    return cases[case]()


@pytest.mark.parametrize("case", ["non_image", "over_pixel_limit", "body_over_cap", "topk_zero",
                                  "topk_over", "unknown_id_search", "unknown_id_delete",
                                  "unknown_id_image", "non_image_add", "path_not_an_image",
                                  "path_outside_root", "link_outside_root", "missing_token",
                                  "wrong_token", "malformed_multipart"])
def test_bad_input_is_a_one_line_json_error_and_loses_nothing(client, service, case):
    escape = os.path.join(service.root, "escape.jpg")
    if not os.path.lexists(escape):
        os.symlink(os.path.join(os.path.dirname(service.root), "lists", "test.txt"), escape)
        with open(os.path.join(service.root, "notes.jpg"), "w") as f:
            f.write("not an image")
    uploads = os.path.join(service.root, "uploads")
    files = sorted(os.listdir(uploads)) if os.path.isdir(uploads) else []
    size, text = database_size(client), list_text(service)
    response, status, word = bad_request(client, service, case)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == status and word in error["message"] and "\n" not in error["message"]
    assert "Traceback" not in response.text
    assert client.get("/health").json()["ready"] is True
    assert database_size(client) == size and list_text(service) == text
    assert (sorted(os.listdir(uploads)) if os.path.isdir(uploads) else []) == files


def test_a_public_address_without_a_token_is_refused(monkeypatch, demo, trained, tmp_path):
    import deploy.serve as serve
    monkeypatch.delenv("HASHNET_TOKEN", raising=False)
    argv = ["--bit", "16", "--dataset", "demo", "--data_path", demo.image_dir, "--list-dir",
            demo.list_dir, "--pretrained", trained.prefix, "--save_path", str(tmp_path),
            "--host", "0.0.0.0"]
    assert_cli_error(run_in_process(serve.main, *argv), "--host 0.0.0.0", "--token")



def test_an_export_serves_as_the_model(demo, trained, tmp_path):
    """--model-dir: the exported model encodes as the checkpoint does, with
    infer.py's cache tag and the export's input size."""
    import deploy.serve as serve
    from deploy.cli import parse_retrieval_args
    from support.centred_model import assert_codes_agree
    from support.demo_set import CROP, database_batch
    from utils.inference.export import dygraph_outputs, save_inference_model
    from utils.retrieval.codes import sign_codes
    save_inference_model(trained.model, str(tmp_path), image_size=CROP)
    args = parse_retrieval_args(serve.build_parser(), [
        "--bit", "16", "--dataset", "demo", "--data_path", demo.image_dir, "--list-dir",
        demo.list_dir, "--model-dir", str(tmp_path), "--save_path", str(tmp_path / "out")])
    encoder = serve.open_encoder(args)
    x = database_batch(demo)[:8]
    assert encoder.tag == "_inference" and args.crop_size == CROP
    # Paddle Inference against dygraph: a bit may differ only where |z| <= allowed
    assert_codes_agree(sign_codes(encoder.query(x)), dygraph_outputs(trained.model, x))
