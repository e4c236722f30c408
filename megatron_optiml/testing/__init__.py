"""Test helpers shipped with the library: a multi-rank gloo harness and tiny fixtures."""
