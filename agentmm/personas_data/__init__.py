"""Built-in personas shipped with agentmm, one TOML file each (package data, no code)."""
