"""Identity and access: directory look-ups, SSO tokens, Cedar policy, credentials."""
