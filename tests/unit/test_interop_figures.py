# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The figures table of docs/interop.md is the one scripts/interop-figures.py renders from
docs/interop.json: a hand edit of either, or a new measurement published to one only, fails."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import importlib.util
import json
import os

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def load_script():
    spec = importlib.util.spec_from_file_location("interop_figures", os.path.join(ROOT, "scripts", "interop-figures.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_docs_table_is_rendered_from_the_json():
    script = load_script()
    with open(os.path.join(ROOT, "docs", "interop.json")) as handle:
        figures = json.load(handle)
    with open(os.path.join(ROOT, "docs", "interop.md")) as handle:
        text = handle.read()
    published = text.split(script.START, 1)[1].split(script.END, 1)[0]
    assert published.strip() == script.table(figures).strip()


def test_every_application_measured_is_in_the_table():
    script = load_script()
    with open(os.path.join(ROOT, "docs", "interop.json")) as handle:
        measured = set(json.load(handle)["apps"])
    assert measured == set(script.APPS)
