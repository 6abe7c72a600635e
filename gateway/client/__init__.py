"""The user's and operator's side: the HTTP client, placement by the client, the wallet, the CLI, provisioning."""
