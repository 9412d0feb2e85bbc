"""Device selection (fastscape/_device.py): checks and error messages, without any GPU.

The CUDA kernels themselves are tested in tests/cuda (GPU or simulator). Here the probes are
monkeypatched to play the machines without numba-cuda or without a GPU.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import MODEL_CASES, make_problem

from fastscape import _device


@pytest.mark.parametrize("device", ["gpu", "CUDA", "", "cuda:0"])
def test_unknown_device_strings_are_refused(device):
    with pytest.raises(ValueError, match=r"unknown device .*expected 'cpu' or 'cuda'"):
        _device.resolve_device(device)


@pytest.mark.parametrize("device", [None, 0, b"cpu"])
def test_device_must_be_a_string(device):
    with pytest.raises(TypeError, match="device must be 'cpu' or 'cuda'"):
        _device.resolve_device(device)


def test_cpu_always_resolves(monkeypatch):
    monkeypatch.setattr(_device, "_numba_cuda_installed", lambda: False)
    assert _device.resolve_device("cpu") == "cpu"


def test_missing_numba_cuda_says_how_to_install(monkeypatch):
    monkeypatch.setattr(_device, "_numba_cuda_installed", lambda: False)
    assert _device.cuda_available() is False
    with pytest.raises(_device.DeviceUnavailableError, match="numba-cuda") as err:
        _device.resolve_device("cuda")
    assert 'pip install "fastscape[cuda]"' in str(err.value)
    assert "GPU" not in str(err.value)


def test_no_gpu_says_so_and_names_the_simulator(monkeypatch):
    monkeypatch.setattr(_device, "_numba_cuda_installed", lambda: True)
    monkeypatch.setattr(_device, "_gpu_visible", lambda: False)
    assert _device.cuda_available() is False
    with pytest.raises(_device.DeviceUnavailableError, match="no CUDA GPU is visible") as err:
        _device.resolve_device("cuda")
    assert "NUMBA_ENABLE_CUDASIM=1" in str(err.value)
    assert "not installed" not in str(err.value)


def test_broken_driver_counts_as_unavailable(monkeypatch):
    def boom():
        raise OSError("libcuda.so: cannot open shared object file")

    monkeypatch.setattr(_device, "_numba_cuda_installed", lambda: True)
    monkeypatch.setattr(_device, "_gpu_visible", boom)
    assert _device.cuda_available() is False


def test_available_when_both_probes_pass(monkeypatch):
    monkeypatch.setattr(_device, "_numba_cuda_installed", lambda: True)
    monkeypatch.setattr(_device, "_gpu_visible", lambda: True)
    assert _device.cuda_available() is True
    assert _device.resolve_device("cuda") == "cuda"


@pytest.mark.parametrize("fn", ["mlp_loss", "mlp_loss_grad", "mlp_hvp", "span_eval", "to_device"])
def test_dispatchers_refuse_cuda_before_any_kernel_runs(monkeypatch, fn):
    monkeypatch.setattr(_device, "_numba_cuda_installed", lambda: False)
    model, theta, X, y = make_problem(MODEL_CASES[4], n=10)
    data = model.batch(X, y)
    args = {
        "mlp_loss": (model, theta, data, "cuda"),
        "mlp_loss_grad": (model, theta, data, "cuda"),
        "mlp_hvp": (model, theta, np.ones((1, model.n_params)), data, "cuda"),
        "span_eval": (model, theta[None, :], np.ones((2, 1)), data, "cuda"),
        "to_device": (data,),
    }[fn]
    with pytest.raises(_device.DeviceUnavailableError, match="numba-cuda"):
        getattr(_device, fn)(*args)


def test_dispatchers_refuse_bad_device_strings():
    model, theta, X, y = make_problem(MODEL_CASES[0], n=10)
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        _device.mlp_loss(model, theta, model.batch(X, y), "gpu")


def test_to_device_needs_a_batch():
    with pytest.raises(TypeError, match="data must be a Batch"):
        _device.to_device((np.ones((2, 2)), np.ones((2, 1))))


def test_cpu_dispatch_matches_the_model_api():
    model, theta, X, y = make_problem(MODEL_CASES[7], n=30)
    data = model.batch(X, y)
    V = np.random.default_rng(0).normal(size=(2, model.n_params))
    assert _device.mlp_loss(model, theta, data) == model.loss(theta, data)
    value, g = _device.mlp_loss_grad(model, theta, data)
    assert value == model.grad(theta, data)[0]
    np.testing.assert_array_equal(g, model.grad(theta, data)[1])
    np.testing.assert_array_equal(_device.mlp_hvp(model, theta, V, data), model.hvp(theta, V, data))


def test_cpu_span_dispatch_is_the_cpu_engine():
    from fastscape.kernels import span as kspan

    from fastscape import config

    model, theta, X, y = make_problem(MODEL_CASES[5], n=30)
    data = model.batch(X, y)
    basis = np.vstack([theta, np.random.default_rng(1).normal(size=model.n_params)])
    C = np.random.default_rng(2).normal(size=(4, 2))
    loss, acc = _device.span_eval(model, basis, C, data)
    want = kspan.span_eval(
        basis, C, *model.spec.kernel_args, data.X, data.Y,
        config.span_block_for(2, model.sizes[1]), config.SPAN_POINT_CHUNK,
    )  # fmt: skip
    np.testing.assert_array_equal(loss, want[0])
    np.testing.assert_array_equal(acc, want[1])


@pytest.mark.parametrize("dtype", ["float16", "f4", None, np.float32])
def test_unknown_dtypes_are_refused(dtype):
    model, theta, X, y = make_problem(MODEL_CASES[0], n=10)
    with pytest.raises(ValueError, match="unknown dtype"):
        _device.mlp_loss(model, theta, model.batch(X, y), "cpu", dtype)


def test_float32_runs_on_the_cpu():
    """The CPU takes float32 (tests/test_float32.py checks its accuracy); a backend that does
    not list it refuses it (test_registered_devices_are_named_in_the_errors)."""
    model, theta, X, y = make_problem(MODEL_CASES[0], n=10)
    data = model.batch(X, y)
    got = _device.mlp_loss(model, theta, data, "cpu", "float32")
    assert isinstance(got, float)
    assert abs(got - _device.mlp_loss(model, theta, data, "cpu")) <= 1e-6 * abs(got)


# ----------------------------------------------------------------------------- public functions
def _public_calls():
    """Every public function with ``device=`` beyond the model and landscape API: (name, call)
    with ``call(model, theta, X, y, device)``."""
    from fastscape import critical, curvature, eos, sharpness

    return {
        "top_eigen": lambda m, t, X, y, d: curvature.top_eigen(m, t, X, y, device=d),
        "top_eigen_exact": lambda m, t, X, y, d: curvature.top_eigen(
            m, t, X, y, method="exact", device=d
        ),
        "hessian_trace": lambda m, t, X, y, d: curvature.hessian_trace(m, t, X, y, device=d),
        "spectral_density": lambda m, t, X, y, d: curvature.spectral_density(m, t, X, y, device=d),
        "epsilon_sharpness": lambda m, t, X, y, d: sharpness.epsilon_sharpness(
            m, t, X, y, device=d
        ),
        "sam_perturbation": lambda m, t, X, y, d: sharpness.sam_perturbation(m, t, X, y, device=d),
        "sam_sharpness": lambda m, t, X, y, d: sharpness.sam_sharpness(m, t, X, y, device=d),
        "sam_gradient": lambda m, t, X, y, d: sharpness.sam_gradient(m, t, X, y, device=d),
        "compare_minima": lambda m, t, X, y, d: sharpness.compare_minima(
            m, {"a": t}, X, y, device=d
        ),
        "classify_point": lambda m, t, X, y, d: critical.classify_point(
            m, t, X, y, grad_tol=1e3, device=d
        ),
        "escape_saddle": lambda m, t, X, y, d: critical.escape_saddle(m, t, X, y, device=d),
        "edge_of_stability": lambda m, t, X, y, d: eos.edge_of_stability(
            m, X, y, steps=1, theta0=t, device=d
        ),
    }


PUBLIC = sorted(_public_calls())


@pytest.fixture
def no_kernels(monkeypatch):
    """Make every dispatcher fail loudly: a test using this proves that no kernel ran."""
    for fn in ("mlp_loss", "mlp_loss_grad", "mlp_hvp", "span_eval"):

        def ran(*args, _fn=fn, **kwargs):
            raise AssertionError(f"_device.{_fn} ran before the device was checked")

        monkeypatch.setattr(_device, fn, ran)


@pytest.mark.parametrize("name", PUBLIC)
def test_public_functions_refuse_unknown_devices_first(name, no_kernels):
    """The device is checked before anything else: even bad data is not looked at."""
    model, theta, X, y = make_problem(MODEL_CASES[4], n=10)
    call = _public_calls()[name]
    with pytest.raises(ValueError, match=r"unknown device 'gpu'; expected 'cpu' or 'cuda'"):
        call(model, theta, X[:, :2], y, "gpu")  # X has the wrong width too
    with pytest.raises(TypeError, match="device must be 'cpu' or 'cuda'"):
        call(model, theta, X, y, None)


@pytest.mark.parametrize("name", PUBLIC)
def test_public_functions_without_numba_cuda_say_how_to_install(name, monkeypatch, no_kernels):
    monkeypatch.setattr(_device, "_numba_cuda_installed", lambda: False)
    model, theta, X, y = make_problem(MODEL_CASES[4], n=10)
    with pytest.raises(_device.DeviceUnavailableError, match="numba-cuda") as err:
        _public_calls()[name](model, theta, X, y, "cuda")
    assert 'pip install "fastscape[cuda]"' in str(err.value)


@pytest.mark.parametrize("name", ["top_eigen", "hessian_trace", "edge_of_stability"])
def test_public_functions_without_a_gpu_say_so(name, monkeypatch, no_kernels):
    monkeypatch.setattr(_device, "_numba_cuda_installed", lambda: True)
    monkeypatch.setattr(_device, "_gpu_visible", lambda: False)
    model, theta, X, y = make_problem(MODEL_CASES[4], n=10)
    with pytest.raises(_device.DeviceUnavailableError, match="no CUDA GPU is visible") as err:
        _public_calls()[name](model, theta, X, y, "cuda")
    assert "NUMBA_ENABLE_CUDASIM=1" in str(err.value)


def test_public_functions_default_to_the_cpu():
    """Leaving device out is device="cpu": the same bits."""
    from fastscape import critical, curvature, sharpness

    model, theta, X, y = make_problem(MODEL_CASES[4], n=10)
    kw = dict(k=2, method="lanczos", which="LA")
    np.testing.assert_array_equal(
        curvature.top_eigen(model, theta, X, y, **kw).eigenvalues,
        curvature.top_eigen(model, theta, X, y, device="cpu", **kw).eigenvalues,
    )
    assert sharpness.sam_sharpness(model, theta, X, y) == sharpness.sam_sharpness(
        model, theta, X, y, device="cpu"
    )
    a = critical.classify_point(model, theta, X, y, grad_tol=1e3)
    b = critical.classify_point(model, theta, X, y, grad_tol=1e3, device="cpu")
    np.testing.assert_array_equal(a.eigenvalues, b.eigenvalues)


@pytest.mark.parametrize("command", ["hessian", "eos"])
def test_cli_device_cuda_without_cuda_fails_before_any_work(command, monkeypatch, capsys):
    from fastscape import cli, datasets, training

    monkeypatch.setattr(_device, "_numba_cuda_installed", lambda: False)

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the device was checked")

    # the CLI reads data and trains through these, whatever module of it calls them
    monkeypatch.setattr(datasets, "load", no_work)
    monkeypatch.setattr(training, "fit", no_work)
    code = cli.main([command, "--device", "cuda", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("fastscape: error: device='cuda' needs the numba-cuda package")
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("command", ["landscape", "hessian", "eos"])
def test_cli_device_option_parses(command, capsys):
    from fastscape.cli import build_parser

    parser = build_parser()
    assert parser.parse_args([command]).device == "cpu"
    assert parser.parse_args([command, "--device", "cuda"]).device == "cuda"
    with pytest.raises(SystemExit) as exc:
        parser.parse_args([command, "--device", "gpu"])
    assert exc.value.code == 2
    assert "invalid choice: 'gpu'" in capsys.readouterr().err


def test_float32_landscape_on_the_cpu_and_a_known_dtype():
    """dtype is checked by the public engine before any work, naming the argument; float32
    runs on the CPU."""
    from fastscape.landscape import evaluate

    model, theta, X, y = make_problem(MODEL_CASES[0], n=10)
    basis, coef = theta[None, :], np.ones((2, 1))
    np.testing.assert_allclose(
        evaluate(model, basis, coef, X, y, dtype="float32").loss,
        evaluate(model, basis, coef, X, y).loss,
        rtol=1e-6,
    )
    with pytest.raises(ValueError, match="unknown dtype 'float16'"):
        evaluate(model, basis, coef, X, y, dtype="float16")
    np.testing.assert_array_equal(
        evaluate(model, basis, coef, X, y, dtype="float64").loss,
        evaluate(model, basis, coef, X, y).loss,
    )


# ----------------------------------------------------------------------------- the seam
class Recording:
    """A backend that runs the CPU's operations and records them: how another backend (Dask,
    a GPU) plugs in, by name, without the API changing."""

    dtypes = ("float64",)

    def __init__(self):
        self.cpu = _device.BACKENDS["cpu"]
        self.calls = []

    def check_available(self):
        self.calls.append("check_available")

    def prepare_data(self, data, dtype):
        self.calls.append("prepare_data")
        return data

    def __getattr__(self, op):  # the CPU's operations only: hasattr stays False for the rest
        fn = getattr(self.cpu, op)

        def run(*args):
            self.calls.append(op)
            return fn(*args)

        return run


@pytest.fixture
def recording(monkeypatch):
    monkeypatch.setattr(_device, "BACKENDS", dict(_device.BACKENDS))
    backend = Recording()
    _device.register_backend("rec", backend)
    return backend


def test_a_registered_backend_runs_every_operation(recording):
    from fastscape.landscape import evaluate

    model, theta, X, y = make_problem(MODEL_CASES[7], n=30)
    data = model.batch(X, y)
    V = np.random.default_rng(1).normal(size=(2, model.n_params))
    basis = np.vstack([theta, V])
    C = np.random.default_rng(2).normal(size=(5, 3))
    assert model.loss(theta, data, device="rec") == model.loss(theta, data)
    np.testing.assert_array_equal(
        model.grad(theta, data, device="rec")[1], model.grad(theta, data)[1]
    )
    np.testing.assert_array_equal(
        model.hvp(theta, V, data, device="rec"), model.hvp(theta, V, data)
    )
    np.testing.assert_array_equal(
        evaluate(model, basis, C, data, device="rec").loss, evaluate(model, basis, C, data).loss
    )
    np.testing.assert_array_equal(
        _device.mlp_hessian(model, theta, data, "rec"), model.hessian(theta, data)
    )
    np.testing.assert_array_equal(
        _device.mlp_logits(model, theta, X, "rec"), model.logits(theta, X)
    )
    ran = set(recording.calls)
    assert {"loss", "loss_grad", "hvp", "span_eval", "hessian", "logits", "prepare_data"} <= ran
    assert recording.calls.count("check_available") >= 6  # every dispatch asks the backend


def test_registered_devices_are_named_in_the_errors(recording):
    assert _device.devices() == ("cpu", "cuda", "rec")
    with pytest.raises(ValueError, match=r"expected 'cpu', 'cuda' or 'rec'"):
        _device.resolve_device("gpu")
    with pytest.raises(
        ValueError, match="dtype='float32' is available with device='cpu' or device='cuda' only"
    ):
        _device.check_dtype("float32", "rec")


def test_an_operation_a_backend_lacks_is_refused_naming_the_device(monkeypatch):
    class Minimal:
        dtypes = ("float64",)

        def check_available(self):
            pass

        def prepare_data(self, data, dtype):
            return data

    monkeypatch.setattr(_device, "BACKENDS", dict(_device.BACKENDS))
    _device.register_backend("tiny", Minimal())
    model, theta, X, y = make_problem(MODEL_CASES[4], n=10)
    with pytest.raises(ValueError, match="hessian is not available with device='tiny'"):
        _device.mlp_hessian(model, theta, model.batch(X, y), "tiny")
    with pytest.raises(ValueError, match="loss is not available with device='tiny'"):
        model.loss(theta, X, y, device="tiny")


def test_register_backend_refuses_what_is_not_a_backend(monkeypatch):
    monkeypatch.setattr(_device, "BACKENDS", dict(_device.BACKENDS))
    with pytest.raises(TypeError, match="lacks dtypes, check_available, prepare_data"):
        _device.register_backend("x", object())
    with pytest.raises(TypeError, match="name must be a non-empty string"):
        _device.register_backend("", Recording())
    assert "x" not in _device.devices()


def test_prepare_checks_device_then_model_then_thetas_then_data(no_kernels):
    from fastscape.data import Batch, DeviceBatch

    model, theta, X, y = make_problem(MODEL_CASES[4], n=10)
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        _device.prepare("not a model", X[:, :1], y, device="gpu", theta=theta[:1])
    with pytest.raises(TypeError, match="model must be an MLP, got str"):
        _device.prepare("not a model", X[:, :1], y, theta=theta[:1])
    with pytest.raises(ValueError, match="theta_b has length"):
        _device.prepare(model, X[:, :1], y, theta_a=theta, theta_b=theta[:-1])
    with pytest.raises(ValueError, match="X has 1 columns"):
        _device.prepare(model, X[:, :1], y, theta=theta)
    with pytest.raises(ValueError, match="unknown dtype 'float16'"):
        _device.prepare(model, X, y, dtype="float16")
    device, data, thetas = _device.prepare(model, X, y, theta=theta, bend=None)
    assert device == "cpu" and type(data) is Batch and not isinstance(data, DeviceBatch)
    assert thetas["bend"] is None and list(thetas) == ["theta", "bend"]
    np.testing.assert_array_equal(thetas["theta"], theta)
    np.testing.assert_array_equal(data.X, X)
    assert _device.prepare(model, data).data is data  # a Batch is validated once, then reused
    assert _device.prepare(model, None).data is None


def test_cuda_dispatch_without_numba_cuda_fails_in_the_seam(monkeypatch, no_kernels):
    """The seam itself (not only the public functions) checks the device before a kernel."""
    monkeypatch.setattr(_device, "_numba_cuda_installed", lambda: False)
    model, theta, X, y = make_problem(MODEL_CASES[4], n=10)
    for call in (
        lambda: _device.BACKENDS["cuda"].check_available(),
        lambda: _device.prepare(model, X, y, device="cuda"),
        lambda: model.loss(theta, X, y, device="cuda"),
    ):
        with pytest.raises(_device.DeviceUnavailableError, match="numba-cuda"):
            call()
