"""List endpoints page by keyset (issue 11): `next_cursor` walks every item exactly once in the list's order,
agrees with offset pages, survives ties in the sort key, is null on the last page, and a cursor that is not one
the list gave (garbage, another list's) is 422."""

from __future__ import annotations

import uuid

import pytest

pytestmark = pytest.mark.integration


def _walk(api, path: str, limit: int, role: str = "admin", **params) -> tuple[list[dict], list[dict]]:
    """Every item of a list by following next_cursor; and the pages' bodies."""
    items, pages, cursor = [], [], None
    while True:
        r = api.get(path, role=role, params={**params, "limit": limit, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        body = r.json()
        pages.append(body)
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items, pages
        assert len(pages) < 1000, "the cursor does not advance"


def _by_offset(api, path: str, limit: int, role: str = "admin", **params) -> list[dict]:
    items, offset = [], 0
    while True:
        body = api.get(path, role=role, params={**params, "limit": limit, "offset": offset}).json()
        items += body["items"]
        offset += limit
        if offset >= body["total"]:
            return items


def _import(api, kind: str, text: str) -> None:
    r = api.client.post(f"/v1/registry/{kind}/import", headers=api.headers("admin"),
                        files={"file": (f"{kind}.csv", text.encode(), "text/csv")})
    assert r.status_code == 200, r.text


def test_registry_lists_walk_by_cursor_exactly_once(db, test_db_api) -> None:
    api = test_db_api
    _import(api, "products", "product_id,name\n" + "".join(f"p-{i:02d},P{i}\n" for i in range(5)))
    _import(api, "accounts", "account_id,name,segment\n"
            + "".join(f"a-{i:03d},A{i},{'smb' if i % 3 else 'consumer'}\n" for i in range(40)))
    _import(api, "devices", "device_id,product_id,account_id,activated_at\n"
            + "".join(f"d-{i:04d},p-{i % 5:02d},a-{i % 40:03d},2026-01-01T00:00:00Z\n" for i in range(250)))
    devices, pages = _walk(api, "/v1/registry/devices", 7)
    ids = [d["device_id"] for d in devices]
    assert ids == sorted(ids) and len(ids) == len(set(ids)) == 250
    assert ids == [d["device_id"] for d in _by_offset(api, "/v1/registry/devices", 7)]
    assert [len(p["items"]) for p in pages] == [7] * 35 + [5] and all(p["total"] == 250 for p in pages)
    # exactly a page's worth left: the last full page says it is the last
    assert len(_walk(api, "/v1/registry/devices", 10)[1]) == 25
    # filters hold across pages
    of_p2, _ = _walk(api, "/v1/registry/devices", 9, product="p-02")
    assert [d["device_id"] for d in of_p2] == [f"d-{i:04d}" for i in range(250) if i % 5 == 2]
    smb, _ = _walk(api, "/v1/registry/accounts", 4, segment="smb")
    assert [a["account_id"] for a in smb] == [f"a-{i:03d}" for i in range(40) if i % 3]
    products, _ = _walk(api, "/v1/registry/products", 2)
    assert [p["product_id"] for p in products] == [f"p-{i:02d}" for i in range(5)]
    # offset counts from the cursor
    first = api.get("/v1/registry/devices", params={"limit": 3}).json()
    skipped = api.get("/v1/registry/devices", params={"limit": 3, "offset": 2, "cursor": first["next_cursor"]})
    assert [d["device_id"] for d in skipped.json()["items"]] == ["d-0005", "d-0006", "d-0007"]


def test_dead_letters_and_jobs_walk_by_cursor_through_ties(db, test_db_api) -> None:
    api = test_db_api
    db.execute("DELETE FROM dead_letters")
    # three rows per timestamp: the id breaks the tie, newest first
    db.execute("INSERT INTO dead_letters (received_at, topic, reason, payload_bytes)"
               " SELECT timestamptz '2026-05-01 00:00:00+00' + (i / 3) * interval '1 second', 'devices/x', 'schema', 1"
               " FROM generate_series(0, 59) AS i")
    letters, _ = _walk(api, "/v1/ingest/dead-letters", 4)
    assert len(letters) == 60 and len({d["id"] for d in letters}) == 60
    assert [(d["received_at"], d["id"]) for d in letters] == sorted(
        ((d["received_at"], d["id"]) for d in letters), reverse=True)
    assert letters == _by_offset(api, "/v1/ingest/dead-letters", 4)

    db.execute("DELETE FROM jobs WHERE kind = 'backtest'")
    ids = [uuid.uuid4() for _ in range(23)]
    db.execute("INSERT INTO jobs (job_id, kind, status, request, created_at)"
               " SELECT id, 'backtest', 'done', '{}', timestamptz '2026-05-01 00:00:00+00' + (n / 4) * interval '1 ms'"
               " FROM unnest(%s::uuid[]) WITH ORDINALITY AS t(id, n)", (ids,))
    jobs, _ = _walk(api, "/v1/pricing/jobs", 5, role="pricing")
    assert sorted(j["job_id"] for j in jobs) == sorted(map(str, ids))
    assert [j["job_id"] for j in jobs] == [j["job_id"] for j in _by_offset(api, "/v1/pricing/jobs", 5, role="pricing")]


@pytest.mark.parametrize("path", ["/v1/registry/devices", "/v1/registry/accounts", "/v1/ingest/dead-letters",
                                  "/v1/pricing/jobs"])
def test_a_cursor_the_list_did_not_give_is_422(db, test_db_api, path) -> None:
    api = test_db_api
    _import(api, "products", "product_id,name\np-1,P\n")
    _import(api, "devices", "device_id,product_id,activated_at\nd-1,p-1,2026-01-01T00:00:00Z\n"
                            "d-2,p-1,2026-01-01T00:00:00Z\n")
    foreign = api.get("/v1/registry/devices", params={"limit": 1}).json()["next_cursor"]
    role = "pricing" if "pricing" in path else "admin"
    for bad in ("garbage", "W10", "WyJqb2JzIiwiYSIsImIiXQ", foreign if path != "/v1/registry/devices" else "WzFd"):
        r = api.get(path, role=role, params={"cursor": bad})
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["error"]["details"][0]["loc"] == ["query", "cursor"]
