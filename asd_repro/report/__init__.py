"""Reporting: the paper-layout table and its diff against the paper."""
