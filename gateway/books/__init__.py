"""The books of a centre: closing, anchoring and settling epochs; disputing the claims on its users
(watcher) and answering disputes of its own claims (answerer); an auditor's check over HTTP."""
