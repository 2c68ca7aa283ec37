# SPDX-License-Identifier: Apache-2.0
"""The write buffer of the wire encoders (C-level only: nothing here for Python code)."""
