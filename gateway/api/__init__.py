"""The HTTP API: routes, request and response models, errors as HTTP answers, body limits, the server."""
