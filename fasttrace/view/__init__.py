# SPDX-License-Identifier: Apache-2.0
"""The trace viewer (``python -m fasttrace view``): `model` (traces as trees, their
errors), drawn by `terminal` (a waterfall in text) and `html` (a self-contained page).
The JSON-lines files it reads are read by `fasttrace.exporters._jsonl_read`;
`fasttrace.viewer` gathers the public names."""
