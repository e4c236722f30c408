"""The version table in backend/compat.py against the Megatron-Core that is installed.

Every patch point and workaround listed for the installed line must still be needed (its call
site is in the source), and what the table says changed between lines must really differ, so
an upgrade that moves or removes one fails here first.
"""

import inspect

import pytest

from megatron_optiml.backend import compat


def test_parse_version_and_lines():
    assert compat.parse_version("0.19.2") == (0, 19, 2)
    assert compat.parse_version("0.16.0rc1") == (0, 16, 0)
    assert compat.parse_version("1.0") == (1, 0, 0)
    assert compat.line_of("0.16.1") == (0, 16)
    assert compat.line_of("0.19.0") == (0, 19)
    assert compat.line_of("0.20.1") == (0, 19)  # nearest tested line below
    assert compat.line_of("0.12.0") == (0, 16)


def test_installed_version_is_a_supported_line():
    import megatron.core

    assert compat.parse_version(megatron.core.__version__) == compat.MCORE_VERSION
    assert compat.MCORE_VERSION[:2] in compat.SUPPORTED_LINES
    assert compat.MCORE_LINE == compat.MCORE_VERSION[:2]


def test_every_line_lists_the_same_workarounds():
    # One table per line, same keys: nothing is silently dropped on one line.
    lines = compat.SUPPORTED_LINES
    assert set(compat.CPU_PATCH_POINTS) == set(lines) == set(compat.DISTOPT_WORKAROUNDS)
    keys = {frozenset(compat.DISTOPT_WORKAROUNDS[line]) for line in lines}
    assert len(keys) == 1
    base = set(compat.CPU_PATCH_POINTS[(0, 16)])
    assert base <= set(compat.CPU_PATCH_POINTS[(0, 19)])
    assert set(compat.CPU_PATCH_POINTS[(0, 19)]) - base == {"current_stream"}


def test_current_stream_patch_matches_the_installed_source():
    from megatron.core.distributed.param_and_grad_buffer import _ParamAndGradBucketGroup

    src = inspect.getsource(_ParamAndGradBucketGroup.start_grad_sync)
    needed = "torch.cuda.current_stream()" in src
    assert needed == ("current_stream" in compat.cpu_patch_points())


def test_common_state_location_matches_the_installed_source():
    from megatron.core.dist_checkpointing import serialization

    save_src = inspect.getsource(serialization.save)
    in_distcp = '"common_state"' in save_src or "'common_state'" in save_src
    assert in_distcp == compat.common_state_in_distcp()


@pytest.mark.parametrize("name", ["unshare_adam_steps", "distopt_torch_adam_step"])
def test_distopt_workarounds_still_needed(name):
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    if name == "unshare_adam_steps":
        # load_state_dict still hands the same step tensor to every parameter.
        src = inspect.getsource(DistributedOptimizer.load_state_dict)
        assert 'v["step"] = step' in src or "v['step'] = step" in src
    else:
        src = inspect.getsource(DistributedOptimizer.load_parameter_state_from_fully_reshardable)
        assert 'if k == "step":' in src
    assert name in compat.DISTOPT_WORKAROUNDS[compat.MCORE_LINE]


def test_checkpoint_without_common_pt_is_refused_on_016(tmp_path, monkeypatch):
    ckpt = tmp_path / "iter_0000001"
    ckpt.mkdir()
    (ckpt / "metadata.json").write_text('{"sharded_backend": "torch_dist"}')
    (ckpt / compat.VERSION_FILE).write_text('{"megatron_core": "0.19.2"}')
    monkeypatch.setattr(compat, "common_state_in_distcp", lambda line=None: False)
    monkeypatch.setattr(compat, "MCORE_VERSION_STR", "0.16.1")
    with pytest.raises(compat.CheckpointVersionError) as err:
        compat.check_checkpoint_readable(ckpt)
    msg = str(err.value)
    assert "0.19.2" in msg and "0.16.1" in msg and str(ckpt) in msg
    (ckpt / compat.COMMON_PT).write_bytes(b"")
    compat.check_checkpoint_readable(ckpt)  # with common.pt: readable
