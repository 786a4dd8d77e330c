"""The cluster's S3 gateway: its identities' `weed shell` scripts (pure)."""

from __future__ import annotations

import pytest

from roost.datadir import s3gateway
from roost.datadir.s3plan import Key
from roost.datadir.seaweed import Endpoint

SHOP = Key(name="app-shop-AK0123456789abcd", access_key="AK0123456789abcd",
           secret_key="s3cret-0123456789abcdef", bucket="shop")  # fmt: skip


def test_an_app_s_identity_acts_on_its_bucket_only_the_admin_s_on_all() -> None:
    assert s3gateway.configure_script(SHOP) == (
        "s3.configure -user=app-shop-AK0123456789abcd -access_key=AK0123456789abcd "
        "-secret_key=s3cret-0123456789abcdef -actions=Read,Write,List,Tagging -buckets=shop "
        "-apply\nexit\n"
    )
    admin = Key(name="roost-servicehost", access_key="AD0123456789abcd", secret_key="x" * 20)
    assert "-actions=Admin -apply" in s3gateway.configure_script(admin)
    assert "-buckets" not in s3gateway.configure_script(admin)
    assert s3gateway.remove_script(SHOP) == (
        "s3.configure -user=app-shop-AK0123456789abcd -delete -apply\nexit\n"
    )
    argv = s3gateway.shell_argv("weed", [Endpoint("10.0.0.1", 7150)], Endpoint("10.0.0.4", 7153))
    assert argv == ["weed", "shell", "-master=10.0.0.1:7150", "-filer=10.0.0.4:7153"]


@pytest.mark.parametrize(
    "bad",
    [
        Key(name="a/b", access_key="AK0123456789abcd", secret_key="s" * 20, bucket="shop"),
        Key(name="a b", access_key="AK0123456789abcd", secret_key="s" * 20, bucket="shop"),
        Key(name="app", access_key="AK01 -delete", secret_key="s" * 20, bucket="shop"),
        Key(name="app", access_key="AK0123456789abcd", secret_key="s\nexit" * 4, bucket="shop"),
        Key(name="app", access_key="AK0123456789abcd", secret_key="s" * 20, bucket="my_shop"),
        Key(name="app", access_key="AK0123456789abcd", secret_key="s" * 20, bucket="a b"),
    ],
)
def test_nothing_that_is_not_a_name_key_or_bucket_reaches_the_shell(bad: Key) -> None:
    with pytest.raises(ValueError):
        s3gateway.configure_script(bad)
