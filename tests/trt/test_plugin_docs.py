"""TensorRT plugin field names, PluginConfig YAML and README tables agree with docs/format.md section 8."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

REPO = Path(__file__).resolve().parents[2]
PLUGINS = {
    "TQQuantize": REPO / "plugins/trt/tq_quantize",
    "TQAttention": REPO / "plugins/trt/tq_attention",
}
SPEC_SECTION = {"TQQuantize": "### 8.1 `TQQuantize`", "TQAttention": "### 8.2 `TQAttention`"}


def spec_text(op: str) -> str:
    text = (REPO / "docs/format.md").read_text()
    start = text.index(SPEC_SECTION[op])
    end = text.find("\n### ", start + 1)
    return text[start : end if end != -1 else len(text)]


def spec_attributes(op: str) -> set[str]:
    """Attribute names listed on the section's `Attributes:` line; `(as in section 2)` names are expanded."""
    text = spec_text(op)
    start = text.index("Attributes:")
    end = text.find("\n\n", start)
    paragraph = text[start : end if end != -1 else len(text)]
    return set(re.findall(r"`([a-z_]+)`", paragraph))


def spec_inputs(op: str) -> list[str]:
    text = spec_text(op)
    inputs_table = text[: text.find("| output |")] if "| output |" in text else text.split("Output 0")[0]
    rows = re.findall(r"^\| (\d+) `([a-z_]+)` \|", inputs_table, flags=re.M)
    return [name for _, name in rows if name]


def creator_fields(folder: Path) -> set[str]:
    source = next(folder.glob("*_plugin.cpp")).read_text()
    return set(re.findall(r'PluginField\("([a-z_]+)"', source))


@pytest.mark.parametrize("op", sorted(PLUGINS))
def test_creator_fields_are_the_spec_attributes(op):
    assert creator_fields(PLUGINS[op]) == spec_attributes(op)


@pytest.mark.parametrize("op", sorted(PLUGINS))
def test_plugin_config_matches_spec(op):
    config = yaml.safe_load(next(PLUGINS[op].glob("*_PluginConfig.yaml")).read_text())
    assert config["name"] == op and config["namespace"] == "tqexport"
    version = config["versions"]["1"]
    assert set(version["attributes"]) == spec_attributes(op)
    assert set(version["attribute_types"]) == spec_attributes(op)
    assert version["inputs"][: len(spec_inputs(op))] == spec_inputs(op)
    for required in version["attributes_required"]:
        assert required in spec_attributes(op)


@pytest.mark.parametrize("op", sorted(PLUGINS))
def test_readme_parameter_table_names_every_field(op):
    readme = (PLUGINS[op] / "README.md").read_text()
    table = readme[readme.index("## Parameters") : readme.index("## Workspace")]
    named = set(re.findall(r"`([a-z_]+)`", table))
    assert spec_attributes(op) <= named


def test_register_exports_only_the_entry_points():
    source = (REPO / "plugins/trt/register.cpp").read_text()
    exported = set(re.findall(r"^TQ_TRT_EXPORT [^(]*?(\w+)\(", source, flags=re.M))
    assert exported == {"getCreators", "getPluginCreators", "setLoggerFinder"}
