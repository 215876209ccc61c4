from dataclasses import dataclass

import pytest

from mastery.core.config import apply_overrides, config_to_dict
from mastery.core.errors import ConfigError


@dataclass(frozen=True)
class Cfg:
    lr: float = 0.1
    epochs: int = 3
    name: str = "a"
    use_bn: bool = False
    sizes: tuple[int, ...] = (1, 2)
    limit: int | None = None

    def validate(self) -> None:
        if self.epochs < 1:
            raise ConfigError("epochs must be >= 1")


def test_overrides_are_parsed_by_field_type():
    cfg = apply_overrides(Cfg(), ["lr=0.05", "epochs=7", "name=b", "use_bn=true", "sizes=4,5,6", "limit=9"])
    assert cfg == Cfg(lr=0.05, epochs=7, name="b", use_bn=True, sizes=(4, 5, 6), limit=9)
    assert apply_overrides(cfg, ["limit=none"]).limit is None
    assert config_to_dict(cfg)["sizes"] == [4, 5, 6]


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError, match="unknown key; valid keys are: epochs, limit, lr, name, sizes, use_bn"):
        apply_overrides(Cfg(), ["momentum=0.9"])


@pytest.mark.parametrize(
    ("item", "message"),
    [("epochs=2.5", "expected an integer"), ("lr=fast", "expected a number"), ("use_bn=maybe", "boolean"),
     ("epochs", "expected key=value"), ("epochs=0", "epochs must be >= 1")],
)
def test_bad_values_name_the_problem(item, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(Cfg(), [item])
