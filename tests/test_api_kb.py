"""The knowledge base through the REST API: uploads, URLs, listing, removal, and a batch of URLs
ingested as a background job. Documents are served from loopback and really indexed."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from aiohttp import web
from api_helpers import api_client, new_key, poll

from mindbot.harness import free_port

CORPUS = Path(__file__).parent / "fixtures" / "kb" / "corpus"
KB = {"allow_private_urls": True}  # the documents are served from loopback


class DocumentServer:
    """Serves the corpus's files over HTTP on loopback; anything else is a 404."""

    async def __aenter__(self):
        app = web.Application()
        app.router.add_get("/{name}", self._file)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *_):
        await self._runner.cleanup()

    async def _file(self, request: web.Request) -> web.StreamResponse:
        path = CORPUS / request.match_info["name"]
        if not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path)


async def test_documents_are_uploaded_added_by_url_listed_and_removed(cloud_services):
    bot = cloud_services.bot(kb=KB, api={"max_upload_bytes": 64 * 1024})
    try:
        reader = new_key(bot, ["read"])
        writer = new_key(bot, ["write"])
        policy = (CORPUS / "travel-policy.md").read_bytes()
        upload = {"file": ("travel-policy.md", policy, "text/markdown")}
        async with DocumentServer() as docs, api_client(bot) as client:
            documents = "/api/v1/kb/default/documents"
            assert (await client.get(documents, headers=reader)).status_code == 404  # none yet
            uploads = "/api/v1/kb/default/uploads"
            assert (await client.post(uploads, files=upload, headers=reader)).status_code == 403

            added = await client.post(uploads, files=upload, headers=writer)
            assert added.status_code == 201, added.text
            assert added.json()["added"] == ["travel-policy.md"] and added.json()["chunks"] > 5
            again = await client.post(uploads, files=upload, headers=writer)
            assert again.status_code == 200 and again.json()["unchanged"] == ["travel-policy.md"]
            huge = {"file": ("big.md", b"# Big\n" + b"word " * 20_000, "text/markdown")}
            assert (await client.post(uploads, files=huge, headers=writer)).status_code == 413

            faq = f"{docs.url}/product-faq.html"
            by_url = await client.post(documents, json={"url": faq}, headers=writer)
            assert by_url.status_code == 201 and by_url.json()["added"] == [faq]
            missing = await client.post(
                documents, json={"url": f"{docs.url}/nothing.md"}, headers=writer
            )
            assert missing.status_code == 422
            assert "404" in missing.json()["skipped"][0]["reason"]
            local = await client.post(documents, json={"url": "file:///etc/passwd"}, headers=writer)
            assert local.status_code == 422

            listed = (await client.get(documents, headers=reader)).json()
            assert sorted(d["doc_id"] for d in listed) == sorted(["travel-policy.md", faq])
            assert "Business Travel Policy" in {d["title"] for d in listed}
            kb = bot.knowledge_base("default")
            assert any("$" in p.text for p in kb.search("hotel limit in Boston", min_score=-1))

            removed = await client.delete(f"{documents}/travel-policy.md", headers=writer)
            assert removed.status_code == 200 and removed.json()["chunks"] > 5
            gone = await client.delete(f"{documents}/travel-policy.md", headers=writer)
            assert gone.status_code == 404 and "No document" in gone.json()["detail"]
            by_id = await client.delete(f"{documents}/{quote(faq, safe='')}", headers=writer)
            assert by_id.status_code == 200 and by_id.json()["doc_id"] == faq
            assert (await client.get(documents, headers=reader)).json() == []

            bad_name = await client.get("/api/v1/kb/not a name!/documents", headers=reader)
            assert bad_name.status_code == 422
    finally:
        bot.stop()


async def test_a_batch_of_urls_is_ingested_as_a_background_job(cloud_services):
    bot = cloud_services.bot(kb=KB, api={"batch_max_urls": 3})
    try:
        writer = new_key(bot, ["write"])
        async with DocumentServer() as docs, api_client(bot) as client:
            urls = [f"{docs.url}/release-notes.txt", f"{docs.url}/nothing.html"]
            submitted = await client.post(
                "/api/v1/kb/tenant-a/jobs", json={"urls": urls}, headers=writer
            )
            assert submitted.status_code == 202
            job = submitted.json()
            assert job["kind"] == "kb.ingest" and job["status"] in ("queued", "running")

            async def fetch(job_id):
                return (await client.get(f"/api/v1/jobs/{job_id}", headers=writer)).json()

            done = await poll(lambda: fetch(job["id"]), lambda j: j["status"] in ("done", "failed"))
            assert done["status"] == "done", done
            assert done["result"]["added"] == [urls[0]]
            assert [s["source"] for s in done["result"]["skipped"]] == [urls[1]]

            hopeless = await client.post(
                "/api/v1/kb/tenant-a/jobs", json={"urls": [urls[1]]}, headers=writer
            )
            failed = await poll(
                lambda: fetch(hopeless.json()["id"]), lambda j: j["status"] in ("done", "failed")
            )
            assert failed["status"] == "failed" and failed["error"] == "no URL could be ingested"
            assert failed["result"]["skipped"][0]["source"] == urls[1]

            for body in ({"urls": ["/etc/passwd"]}, {"urls": []}, {"urls": [urls[0]] * 4}, {}):
                refused = await client.post("/api/v1/kb/tenant-a/jobs", json=body, headers=writer)
                assert refused.status_code == 422, body

            listed = await client.get("/api/v1/kb/tenant-a/documents", headers=writer)
            assert [d["doc_id"] for d in listed.json()] == [urls[0]]
            jobs = (await client.get("/api/v1/jobs?kind=kb.ingest", headers=writer)).json()
            assert [j["id"] for j in jobs] == [hopeless.json()["id"], job["id"]]
    finally:
        bot.stop()
