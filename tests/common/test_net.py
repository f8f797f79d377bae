import pytest

from fl_async._net import format_address, parse_address


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:9091", ("127.0.0.1", 9091)), ("[::1]:80", ("::1", 80)), ("localhost:0", ("localhost", 0))],
)
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected
    assert parse_address(format_address(*expected)) == expected


@pytest.mark.parametrize("bad", ["", "host", ":90", "h:99999", "h:x", "::1:80", "[::1]x"])
def test_parse_address_refuses(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid address"):
        parse_address(bad)
