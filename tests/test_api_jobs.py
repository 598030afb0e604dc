"""Background text jobs through the REST API: a batch of questions answered one by one by the
configured LLM (the OpenAI stand-in) with the persona's instructions."""

from __future__ import annotations

from api_helpers import api_client, new_key, poll

from mindbot.standins import HttpError, Text


def finished(job: dict) -> bool:
    return job["status"] in ("done", "failed")


async def test_a_batch_of_questions_is_answered_in_the_background(cloud_services):
    cloud_services.llm.script(Text("Four."), Text("Blue, mostly."))
    bot = cloud_services.bot(api={"batch_max_questions": 3})
    try:
        writer = new_key(bot, ["write"])
        reader = new_key(bot, ["read"])
        async with api_client(bot) as client:
            questions = ["What is two plus two?", "What colour is the sky?"]
            body = {"persona": "tutor", "questions": questions}
            assert (
                await client.post("/api/v1/jobs/questions", json=body, headers=reader)
            ).status_code == 403
            submitted = await client.post("/api/v1/jobs/questions", json=body, headers=writer)
            assert submitted.status_code == 202 and submitted.json()["kind"] == "questions"
            job_id = submitted.json()["id"]

            async def fetch(job_id=job_id):
                return (await client.get(f"/api/v1/jobs/{job_id}", headers=reader)).json()

            done = await poll(fetch, finished)
            assert done["status"] == "done", done
            assert done["result"]["persona"] == "tutor" and done["result"]["answered"] == 2
            assert [(a["question"], a["answer"]) for a in done["result"]["answers"]] == [
                (questions[0], "Four."),
                (questions[1], "Blue, mostly."),
            ]
            tutor = bot.personas.get("tutor").system_instruction()
            for request, question in zip(cloud_services.llm.requests, questions, strict=True):
                assert request["messages"] == [
                    {"role": "system", "content": tutor},
                    {"role": "user", "content": question},
                ]

            cloud_services.llm.script(HttpError(400, "bad request", should_retry=False))
            broken = await client.post(
                "/api/v1/jobs/questions", json={"questions": ["Hello?"]}, headers=writer
            )
            failed = await poll(lambda: fetch(broken.json()["id"]), finished)
            assert failed["status"] == "failed" and "no question was answered" in failed["error"]
            assert failed["result"]["answers"][0]["error"].startswith("BadRequestError")

            for bad in (
                {"persona": "nobody", "questions": ["Hi?"]},
                {"questions": []},
                {"questions": ["a", "b", "c", "d"]},
                {"questions": [""]},
                {"questions": "not a list"},
                {"questions": ["Hi?"], "temperature": 2},
            ):
                refused = await client.post("/api/v1/jobs/questions", json=bad, headers=writer)
                assert refused.status_code == 422, bad
            assert (await client.get("/api/v1/jobs/nope", headers=reader)).status_code == 404
            listed = (await client.get("/api/v1/jobs?status=failed", headers=reader)).json()
            assert [j["id"] for j in listed] == [broken.json()["id"]]
    finally:
        bot.stop()
