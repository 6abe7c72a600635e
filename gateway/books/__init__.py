"""The books of a centre: closing, anchoring and settling epochs; an auditor's check over HTTP."""
