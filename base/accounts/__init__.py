"""Accounts: signup, login, passwords, mailed links, sessions' tokens and sign-in with providers.
Routes call `service`; it decides, with the stores, the account objects (UserSessions, LoginGuard,
AttemptLimiter, SignInState) and the mail. ARCHITECTURE.md, Accounts."""
