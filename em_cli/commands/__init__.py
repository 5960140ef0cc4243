"""Thin command modules: parse options, call the library, print."""
