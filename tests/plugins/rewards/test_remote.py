"""The remote VLM judge against a real OpenAI-compatible HTTP server process started here (no patched client):
ratings from log-probabilities or from the reply, retries on 503, a model the server does not serve, a server that
is down, all in one sentence."""

import json
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from prefopt.errors import PrefoptError
from prefopt_plugins.rewards.remote import RemoteVLMConfig, RemoteVLMReward

SERVER = r'''
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, log = int(sys.argv[1]), sys.argv[2]
failures = {"left": 1}  # the first chat request gets a 503: the client retries

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _send(self, code, payload):
        body = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._send(200, {"data": [{"id": "judge-model"}]})

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with open(log, "a") as f:
            f.write(json.dumps({"auth": self.headers.get("Authorization"), "body": request}) + "\n")
        if failures["left"]:
            failures["left"] -= 1
            return self._send(503, {"error": "warming up"})
        content = request["messages"][0]["content"]
        text = content[-1]["text"]
        rating = 9 if "jumps" in text else 2
        choice = {"message": {"role": "assistant", "content": f"{rating}"}}
        if request.get("logprobs"):
            choice["logprobs"] = {"content": [{"token": str(rating), "logprob": -0.1, "top_logprobs": [
                {"token": str(rating), "logprob": -0.2231}, {"token": "5", "logprob": -1.6094}]}]}
        self._send(200, {"choices": [choice]})

ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
'''


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    port, log = _free_port(), tmp_path / "requests.jsonl"
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    process = subprocess.Popen([sys.executable, str(script), str(port), str(log)])
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1", log
    process.terminate()
    process.wait(timeout=10)


def _videos(n):
    return [np.full((6, 40, 56, 3), 40 * i, dtype=np.uint8) for i in range(n)]


def test_ratings_come_from_the_servers_log_probabilities_with_a_retry_and_the_frames_sent(server, monkeypatch):
    url, log = server
    monkeypatch.setenv("JUDGE_KEY", "secret")
    reward = RemoteVLMReward(RemoteVLMConfig(base_url=url, model="judge-model", api_key_env="JUDGE_KEY", frames=3,
                                             backoff_s=0.05, concurrency=2))
    scores = reward.score(_videos(2), ["a person jumps", "a person nods"], [])
    # P(9) = e^-0.2231 = 0.8, P(5) = 0.2 (normalised): 0.8·9 + 0.2·5 = 8.2; P(2) = 0.8, P(5) = 0.2: 2.6
    assert [s.raw for s in scores] == [pytest.approx(8.2, abs=1e-3), pytest.approx(2.6, abs=1e-3)]
    requests = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(requests) == 3  # one 503, retried
    sent = requests[-1]["body"]["messages"][0]["content"]
    assert [part["type"] for part in sent] == ["image_url"] * 3 + ["text"]
    assert sent[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert requests[-1]["auth"] == "Bearer secret" and requests[-1]["body"]["model"] == "judge-model"


def test_without_logprobs_the_replys_number_is_the_rating(server):
    url, _ = server
    reward = RemoteVLMReward(RemoteVLMConfig(base_url=url, model="judge-model", logprobs=False, backoff_s=0.05))
    assert [s.raw for s in reward.score(_videos(2), ["a person jumps", "a cat"], [])] == [9.0, 2.0]


def test_a_model_the_server_does_not_serve_and_a_server_that_is_down_are_one_sentence(server):
    url, _ = server
    message = RemoteVLMReward.missing_weights(RemoteVLMConfig(base_url=url, model="other"))
    assert message.endswith("serves judge-model, not `other`; set the reward's `model` option to one of them.")
    down = RemoteVLMConfig(base_url=f"http://127.0.0.1:{_free_port()}/v1", retries=1, backoff_s=0.01)
    message = RemoteVLMReward.missing_weights(down)
    assert "does not answer" in message and "2 tries" in message and "vllm serve" in message
    with pytest.raises(PrefoptError, match="does not answer"):
        RemoteVLMReward(down)
    with pytest.raises(ValueError, match="`base_url` must start with http"):
        RemoteVLMConfig(base_url="localhost:8000")
