"""Frames in, verdicts out: wire protocol v1 (``protocol``), payload decoding
(``decode``), camera/scanner pairing (``pairing``), the ingest thread
(``ingest``), verdict publishing (``publisher``) and the control socket (``control``)."""
