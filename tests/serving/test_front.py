"""The front on the serving port, in-process, before a stand-in for multi-model-server."""

import asyncio
import json
import threading

import pytest
import requests
from aiohttp import web

from detector.serving.front import Front
from detector.serving.model_server import free_port

LIMIT = 1000


class Backend:
    """What multi-model-server answers: echoes the request, or the error a test asks for."""

    def __init__(self):
        self.requests = []
        self.answer = None  # (status, body, content type) to answer next, else an echo
        self.on_request = lambda: None

    async def invocations(self, request):
        body = await request.read()
        self.requests.append((dict(request.headers), body))
        self.on_request()
        if self.answer is not None:
            status, data, content_type = self.answer
            return web.Response(status=status, body=data, content_type=content_type)
        echo = {"body": body.decode(), "content_type": request.headers.get("Content-Type"),
                "accept": request.headers.get("Accept"), "attributes": request.headers.get("X-Amzn-SageMaker-Custom-Attributes")}
        return web.Response(body=json.dumps(echo).encode(), content_type="application/json", headers={"X-Backend": "yes"})


@pytest.fixture()
def front():
    backend = Backend()
    state = {"unavailable": None}
    loop = asyncio.new_event_loop()
    backend_port, front_port = free_port(), free_port()
    started = threading.Event()
    holder = {}

    async def main():
        app = web.Application()
        app.router.add_post("/invocations", backend.invocations)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", backend_port).start()
        front = Front(backend_port, lambda: state["unavailable"], LIMIT, response_timeout_s=5)
        await front.start("127.0.0.1", front_port)
        holder.update(runner=runner, front=front, stop=asyncio.Event())
        started.set()
        await holder["stop"].wait()
        await front.close()
        await runner.cleanup()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(10)
    yield f"http://127.0.0.1:{front_port}", backend, state, holder
    loop.call_soon_threadsafe(holder["stop"].set)
    thread.join(10)


def test_ping_tells_whether_a_worker_can_answer(front):
    url, _, state, _ = front
    assert requests.get(f"{url}/ping").json() == {"status": "Healthy"}
    state["unavailable"] = "loading the model"
    response = requests.get(f"{url}/ping")
    assert response.status_code == 503 and response.json() == {"status": "Unhealthy", "reason": "loading the model"}


def test_a_request_passes_through_with_its_headers(front):
    url, backend, _, _ = front
    headers = {"Content-Type": "image/png", "Accept": "application/x-coco", "X-Amzn-SageMaker-Custom-Attributes": "max_detections=2"}
    with requests.Session() as session:
        for _ in range(3):  # on one kept-alive connection each side
            response = session.post(f"{url}/invocations", data=b"pixels", headers=headers)
            assert response.status_code == 200
            assert response.json() == {"body": "pixels", "content_type": "image/png", "accept": "application/x-coco",
                                       "attributes": "max_detections=2"}
            assert response.headers["X-Backend"] == "yes" and response.headers["Content-Type"].startswith("application/json")


def test_no_worker_answers_503_at_once_and_nothing_is_forwarded(front):
    url, backend, state, _ = front
    state["unavailable"] = "worker restarting (worker process 42 died)"
    response = requests.post(f"{url}/invocations", data=b"x", headers={"Content-Type": "image/png"})
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert response.json() == {"error": "no worker can take the request now: worker restarting (worker process 42 died); retry shortly"}
    assert backend.requests == []


def test_a_body_above_the_limit_is_413_with_json(front):
    url, backend, _, _ = front
    response = requests.post(f"{url}/invocations", data=b"x" * (LIMIT + 1), headers={"Content-Type": "image/png"})
    assert response.status_code == 413
    assert response.json() == {"error": f"request body is {LIMIT + 1} bytes, above the limit of {LIMIT} bytes (SAGEMAKER_MAX_PAYLOAD_IN_MB={LIMIT / 1048576:g})"}
    chunked = requests.post(f"{url}/invocations", data=iter([b"x" * 600, b"x" * 600]), headers={"Content-Type": "image/png"})
    assert chunked.status_code == 413 and "request body is larger, above the limit" in chunked.json()["error"]
    assert backend.requests == []
    assert requests.post(f"{url}/invocations", data=b"x" * LIMIT, headers={"Content-Type": "image/png"}).status_code == 200


def test_the_handlers_errors_pass_and_the_servers_own_get_the_same_shape(front):
    url, backend, _, _ = front
    backend.answer = (415, b'{"error": "content type \'text/csv\' is not supported"}', "application/json")
    response = requests.post(f"{url}/invocations", data=b"a,b", headers={"Content-Type": "text/csv"})
    assert response.status_code == 415 and response.json() == {"error": "content type 'text/csv' is not supported"}
    backend.answer = (507, b'{"code": 507, "type": "InsufficientStorage", "message": "no room"}', "application/json")
    response = requests.post(f"{url}/invocations", data=b"a", headers={"Content-Type": "image/png"})
    assert response.status_code == 507 and response.json() == {"error": "model server: no room"}


def test_a_worker_that_dies_under_a_request_turns_the_servers_500_into_503(front):
    url, backend, state, _ = front
    backend.answer = (500, b'{"code": 500, "type": "InternalServerException", "message": "Worker died."}', "application/json")
    response = requests.post(f"{url}/invocations", data=b"a", headers={"Content-Type": "image/png"})
    assert response.status_code == 500 and response.json() == {"error": "model server: Worker died."}
    backend.on_request = lambda: state.update(unavailable="worker restarting (worker process 7 died)")
    response = requests.post(f"{url}/invocations", data=b"a", headers={"Content-Type": "image/png"})
    assert response.status_code == 503
    assert response.json() == {"error": "no worker can take the request now: worker restarting (worker process 7 died); retry shortly"}


def test_an_unreachable_server_is_503(front):
    url, _, _, holder = front
    holder["front"].upstream.close()
    holder["front"].upstream.port = free_port()  # nothing listens there
    response = requests.post(f"{url}/invocations", data=b"a", headers={"Content-Type": "image/png"})
    assert response.status_code == 503
    assert "no worker can take the request now: the model server did not answer" in response.json()["error"]


def test_other_paths_are_404_json(front):
    url, _, _, _ = front
    for method, path in [("GET", "/models"), ("POST", "/models?url=x.mar"), ("DELETE", "/models/model"), ("GET", "/")]:
        response = requests.request(method, f"{url}{path}")
        assert response.status_code == 404 and "this port serves GET /ping and POST /invocations" in response.json()["error"]


def test_a_port_in_use_is_a_clear_error():
    import socket

    from detector.errors import DetectorError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        front = Front(free_port(), lambda: None, LIMIT, response_timeout_s=5)
        with pytest.raises(DetectorError, match=rf"cannot listen on 127.0.0.1:{port} \(SAGEMAKER_BIND_TO_PORT\): "):
            asyncio.run(front.start("127.0.0.1", port))


def test_execution_parameters_are_not_found_unless_configured(front):
    url, backend, _, _ = front
    response = requests.get(f"{url}/execution-parameters")
    assert response.status_code == 404 and "not found" in response.json()["error"]
    assert backend.requests == []
