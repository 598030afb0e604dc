"""MindBot's eval suite: conversation scenarios in Pipecat's eval format, and the metrics.

The scenarios (``mindbot/evals/scenarios/*.yaml``) are Pipecat scenario files
(``pipecat.evals``), played against the assistant through Pipecat's eval transport by Pipecat's
own harness, driver and matcher; ``mindbot eval suite`` runs them and prints the seed's success
metrics as measured. The modules:

- ``catalog``: loading scenario files, and the ``mindbot:`` block (who calls).
- ``runner``: the eval server (``WS /eval``) and one harness session per scenario.
- ``responder``: the scripted LLM of the ci profile.
- ``metrics``: function call success, response latency, STT word error rate, error rate.
- ``suite``: the ci and live profiles, the report (table and JSON).
- ``voices``: the harness's caller voice (Piper) and ear (Whisper).
- ``command``: the command line.
"""
