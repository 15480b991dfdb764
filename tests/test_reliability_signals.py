

# ---------------------------------------------------------------------------------------------- multi-worker start-up


def _unreachable_worker(tmp_path: Path) -> dict[str, str]:
    """TF_CONFIG of worker 0 of two, whose worker 1 never starts (a port nothing listens on)."""
    from train_helpers import free_ports

    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    return {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}), "PORT": str(ports[1])}


def test_a_worker_that_never_comes_is_named_after_the_start_up_limit(tmp_path: Path) -> None:
    settings = _tiny_training(tmp_path)
    cluster = _unreachable_worker(tmp_path)
    env = _env(TF_CONFIG=cluster["TF_CONFIG"], KIT_MULTIWORKER_START_S="2")
    result = subprocess.run(
        [sys.executable, "-m", "kit", "train", *settings, "strategy=multiworker"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"no answer from worker 1 (127.0.0.1:{cluster['PORT']}) after 2 s" in errors[0]
    assert "KIT_MULTIWORKER_START_S" in errors[0]


def test_sigterm_ends_a_worker_waiting_for_the_others(tmp_path: Path) -> None:
    settings = _tiny_training(tmp_path)
    cluster = _unreachable_worker(tmp_path)
    log = tmp_path / "worker.log"
    env = _env(TF_CONFIG=cluster["TF_CONFIG"], KIT_MULTIWORKER_START_S="100000")
    with open(log, "w") as handle:
        command = [sys.executable, "-m", "kit", "train", *settings, "strategy=multiworker"]
        proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=handle, stderr=handle)
        try:
            wait_until(lambda: "multi-worker start-up: waiting for worker 1" in log.read_text(errors="replace"), "the wait", proc)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=REAP_TIMEOUT_S)  # a hang, before: TensorFlow's handler only noted the SIGTERM
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=REAP_TIMEOUT_S)
    assert proc.returncode == 143, log.read_text()
    assert "interrupted (SIGTERM)" in log.read_text()
