"""Values the schema used to accept that crashed later with a traceback: each is refused as
the config loads (exit code 2, one line naming the key), and every recipe still loads."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from dbparallel.cli import main
from dbparallel.config import Config, ConfigError, ModelConfig, NoiseConfig, load_config
from dbparallel.config.noise_checks import MIN_MASS, training_mass

ROOT = Path(__file__).resolve().parents[2]
TEXT = ["data.source=shakespeare"]


@pytest.mark.parametrize(
    ("overrides", "key", "says"),
    [
        # non-finite floats, in every section that has float keys
        (["noise.P_mean=nan"], "noise.P_mean", "finite"),
        (["noise.P_mean=inf"], "noise.P_mean", "finite"),
        (["noise.P_std=inf"], "noise.P_std", "finite"),
        (["noise.gamma=nan"], "noise.gamma", "finite"),
        (["train.lr=inf"], "train.lr", "finite"),
        (["train.lr=nan"], "train.lr", "finite"),
        (["train.grad_clip=inf"], "train.grad_clip", "finite"),
        (["runtime.placement_timeout_s=inf"], "runtime.placement_timeout_s", "finite"),
        (["train.weight_decay=nan"], "train.weight_decay", "finite"),
        (["train.weight_decay=-1"], "train.weight_decay", ">= 0"),
        (["sample.cfg_scale=inf"], "sample.cfg_scale", "finite"),
        (["runtime.cpus_per_block=inf"], "runtime.cpus_per_block", "finite"),
        (["model.mlp_ratio=inf"], "model.mlp_ratio", "finite"),
        # a training density with no mass in [sigma_min, sigma_max], or too narrow
        (["noise.P_mean=1000"], "noise.P_mean", "at least 1e-06"),
        (["noise.P_mean=-20"], "noise.P_mean", "at least 1e-06"),
        (["noise.P_std=1e9"], "noise.P_std", "at least 1e-06"),
        (["noise.P_std=1e-300"], "noise.P_std", ">= 0.001"),
        (["noise.P_std=0"], "noise.P_std", ">= 0.001"),
        # noise scales outside what float32 holds, squared
        (["noise.sigma_max=inf"], "noise.sigma_max", "finite"),
        (["noise.sigma_max=1e300"], "noise.sigma_max", "[1e-09, 1e+09]"),
        (["noise.sigma_min=1e-320"], "noise.sigma_min", "[1e-09, 1e+09]"),
        (["noise.sigma_min=0"], "noise.sigma_min", "[1e-09, 1e+09]"),
        (["noise.sigma_data=1e-12"], "noise.sigma_data", "[1e-09, 1e+09]"),
        (["noise.sigma_min=100"], "noise.sigma_min", "< noise.sigma_max"),
        # widths no model can be built with
        (["model.heads=5"], "model.heads", "not divisible by 5 heads"),
        (["model.hidden=30"], "model.hidden", "not divisible by the 4 heads"),
        (["model.hidden=30", "model.heads=3"], "model.hidden", "multiple of 4"),
        (["task=vit", "model.hidden=30", "model.heads=3"], "model.hidden", "multiple of 4"),
        (["model.hidden=1", "model.heads=1"], "model.hidden", "multiple of 4"),
        (["train.stall_timeout_s=-inf"], "train.stall_timeout_s", "(or inf: never)"),
        (["task=ar", *TEXT, "model.hidden=30", "model.heads=2"], "model.heads",
         "even head width"),
        # task=mdm: a last block with no masking times
        (["task=mdm", *TEXT, "noise.t_min=0.9999"], "noise.t_min", "< 1/4"),
        # amounts of memory that float() does not read
        (["runtime.device_memory=1.2.3GiB"], "runtime.device_memory", "not an amount"),
        (["runtime.device_memory=."], "runtime.device_memory", "not an amount"),
        (["runtime.device_memory=1e400GiB"], "runtime.device_memory", "too large"),
        # a unit left out: 24 bytes
        (["runtime.device_memory=24"], "runtime.device_memory",
         "'24' is 24 bytes; give a unit (e.g. 24GiB, 24GB)"),
        # a section given a value
        (["model=3"], "model", "is a section, a mapping of keys"),
        (["train=[1,2]"], "train", "is a section, a mapping of keys"),
        # a key given keys under it, or a list, where it takes a value
        (["train.block_steps.x=1"], "train.block_steps",
         "expects a list, e.g. [600, 400]; got {'x': 1}"),
        (["data.text_field.x=1"], "data.text_field", "expects a string, got {'x': 1}"),
        (["data.text_field=[a]"], "data.text_field", "expects a string, got ['a']"),
        # an integer too large for a float; an item too long to be a file name
        (["train.lr=" + "9" * 400], "train.lr", "must be a finite number, got one of 400 "),
        (["model.hidden=" + "9" * 300], "model.hidden", "9" * 300),
        (["train.block_steps=[5,null]"], "train.block_steps[1]",
         "expects an integer (e.g. 100), got null"),
        # the override that did it is named, not the recipe that set the key before it
        ([str(ROOT / "jobs" / "tiny_cpu.yaml"), "train.steps.x=1"], "train.steps",
         "expects an integer"),
    ],
)
def test_a_value_that_used_to_crash_is_refused_naming_the_key(
        capsys, overrides: list[str], key: str, says: str) -> None:
    assert main(["plan", *overrides]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dbparallel: error: {key}: "), err
    assert says in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_a_recipe_giving_a_section_a_value_is_named(tmp_path, capsys) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: 3\n")
    assert main(["plan", str(recipe)]) == 2
    assert "model: is a section, a mapping of keys" in capsys.readouterr().err


def test_a_recipe_giving_a_list_key_keys_is_named(tmp_path, capsys) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  block_steps:\n    first: 300\n")
    assert main(["plan", str(recipe)]) == 2
    assert capsys.readouterr().err == (
        f"dbparallel: error: {recipe}: train.block_steps: expects a list, e.g. [600, 400]; "
        f"got {{'first': 300}}\n")


@pytest.mark.parametrize(("given", "item", "shown"), [
    ("[[300], 200]", 0, "[300]"), ("[300, {first: 200}]", 1, "{'first': 200}")])
def test_a_list_or_keys_as_an_item_of_a_list_key_is_named(tmp_path, capsys, given: str,
                                                          item: int, shown: str) -> None:
    assert main(["plan", f"train.block_steps={given}"]) == 2
    assert capsys.readouterr().err == (
        f"dbparallel: error: train.block_steps[{item}]: expects a number, e.g. [600, 400]; "
        f"got {shown}\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"train:\n  block_steps: {given}\n")
    assert main(["plan", str(recipe)]) == 2
    assert capsys.readouterr().err.startswith(
        f"dbparallel: error: {recipe}: train.block_steps[{item}]: expects a number"), recipe


def test_every_recipe_loads() -> None:
    recipes = sorted((ROOT / "jobs").glob("*.yaml"))
    assert len(recipes) >= 10
    for recipe in recipes:
        assert isinstance(load_config([recipe]), Config), recipe


def test_widths_that_fit_still_load() -> None:
    from dbparallel.models.presets import resolve

    for overrides, width in ((["model.hidden=32", "model.heads=2"], (32, 2)),
                             (["model.hidden=8", "model.heads=8"], (8, 8)),
                             (["model.preset=dit-s"], (384, 6)),
                             (["task=ar", *TEXT, "model.hidden=8", "model.heads=4"], (8, 4))):
        resolved = resolve(load_config([], overrides).model)
        assert (resolved.hidden, resolved.heads) == width, overrides


def test_resolve_raises_a_config_error_for_a_model_changed_after_loading() -> None:
    from dbparallel.models.presets import resolve

    model = ModelConfig()
    model.heads = 5
    with pytest.raises(ConfigError, match=r"^model.heads: model.hidden=64 \(model.preset=tiny\)"):
        resolve(model)
    assert resolve(ModelConfig(hidden=48, heads=3)).hidden == 48


def test_the_mass_threshold_is_where_the_partition_still_works() -> None:
    """Just above MIN_MASS (P_mean 4.6 std below ln sigma_min) loads and partitions into
    strictly ascending ranges; 4.9 std below is refused."""
    from dbparallel.core.noise import LogNormalNoise
    from dbparallel.core.partition import equiprobable_partition
    from dbparallel.core.sampler import equiprobable_schedule

    above = math.log(0.002) - 1.2 * 4.6
    assert training_mass(above, 1.2, 0.002, 80.0) > MIN_MASS
    NoiseConfig(P_mean=above)
    for noise in (LogNormalNoise(above, 1.2, 0.002, 80.0), LogNormalNoise(0.0, 1e-3, 0.5, 2.0)):
        for blocks in (2, 4, 64):
            b = equiprobable_partition(noise, blocks).boundaries
            assert all(lo < hi for lo, hi in zip(b, b[1:], strict=False)), b
        sigmas = equiprobable_schedule(noise, 1000)
        assert bool((sigmas[:-1] > sigmas[1:]).all())
    with pytest.raises(ConfigError, match="^noise.P_mean: .* at least 1e-06"):
        NoiseConfig(P_mean=math.log(0.002) - 1.2 * 4.9)


def test_training_mass_matches_the_core_density() -> None:
    from dbparallel.core.noise import LogNormalNoise

    for P_mean, P_std, lo, hi in ((-1.2, 1.2, 0.002, 80.0), (-12.0, 1.2, 0.002, 80.0),
                                  (8.0, 0.5, 0.002, 80.0), (0.0, 100.0, 1e-9, 1e9)):
        core = LogNormalNoise(P_mean, P_std, lo, hi)._normaliser()
        assert training_mass(P_mean, P_std, lo, hi) == pytest.approx(core, rel=1e-6)


def test_a_time_split_that_leaves_a_block_no_times_is_refused_for_mdm_only() -> None:
    with pytest.raises(ConfigError, match=r"^noise.t_min: 0.3 leaves the last block"):
        load_config([], ["task=mdm", *TEXT, "noise.t_min=0.3", "model.blocks=4"])
    load_config([], ["task=mdm", *TEXT, "noise.t_min=0.3", "model.blocks=2"])
    load_config([], ["noise.t_min=0.3"])  # dit draws sigma, not t


def test_values_at_the_edge_still_load() -> None:
    from dbparallel.config import load_config
    from dbparallel.models.presets import resolve

    narrow = resolve(load_config([], ["model.hidden=4", "model.heads=1"]).model)
    assert (narrow.hidden, narrow.heads) == (4, 1)  # the narrowest image width that builds
    never = load_config([], ["train.stall_timeout_s=inf", "train.assembly_timeout_s=inf"]).train
    assert never.stall_timeout_s == never.assembly_timeout_s == float("inf")


def test_a_stored_config_loads_with_a_value_the_schema_now_refuses() -> None:
    """A run directory's config.yaml or an export's config trained as it is: a key the
    schema now wants finite (here a placement timeout of inf) does not stop it loading."""
    from dbparallel.config import ConfigError, from_dict, load_config, to_dict

    stored = to_dict(load_config([], []))
    stored["runtime"]["placement_timeout_s"] = float("inf")
    assert from_dict(stored).runtime.placement_timeout_s == float("inf")
    with pytest.raises(ConfigError, match="runtime.placement_timeout_s"):
        load_config([], ["runtime.placement_timeout_s=inf"])  # a new run: refused


@pytest.mark.parametrize(("item", "said"), [
    ("train.steps=5.5", "train.steps: expects an integer (e.g. 100), got '5.5'"),
    ("train.lr=abc", "train.lr: expects a number (e.g. 0.001), got 'abc'"),
    ("train.checkpoint_layers=maybe", "train.checkpoint_layers: expects true or false, got "
                                      "'maybe'")])
def test_a_value_of_the_wrong_type_says_what_the_key_takes(item: str, said: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config([], [item])
    assert str(err.value) == said


def test_a_whole_number_written_as_a_float_is_taken_where_a_key_takes_an_integer(
        tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  warmup_steps: 2.0e+2\n")
    cfg = load_config([recipe], ["train.steps=1e3", "model.blocks=2",
                                 "train.block_steps=[1e3,500.0]", "train.lr=2e-4"])
    assert (cfg.train.steps, cfg.train.warmup_steps) == (1000, 200)
    assert cfg.train.block_steps == [1000, 500]
    assert all(type(n) is int for n in [cfg.train.steps, *cfg.train.block_steps])
    assert cfg.train.lr == 2e-4
    with pytest.raises(ConfigError, match=r"train.block_steps\[1\]: expects an integer"):
        load_config([], ["model.blocks=2", "train.block_steps=[1e3,2.5]"])
