"""Public-domain English evaluation text taken from Debian packages (Austen's novels; the Jargon File)."""
