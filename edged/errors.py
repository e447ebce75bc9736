"""Domain errors and the exit codes the CLI maps them to (sysexits.h where one fits)."""

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE: Redis cannot be reached
EXIT_TEMPFAIL = 75  # EX_TEMPFAIL: refused for now (the daemon's outbox is full); try again
EXIT_NOPERM = 77  # EX_NOPERM: Redis refused the user (wrong password, or its ACL denies it)
EXIT_CONFIG = 78  # EX_CONFIG: the configuration is wrong


class EdgedError(Exception):
    """Base of the errors edged reports to an operator as one clear line."""

    exit_code = EXIT_FAILURE


class ConfigError(EdgedError):
    """The configuration cannot be used; the message names the file and the field."""

    exit_code = EXIT_CONFIG


class RedisUnavailable(EdgedError):
    """Redis could not be reached (connection refused, timeout, DNS)."""

    exit_code = EXIT_UNAVAILABLE


class AccessDenied(EdgedError):
    """Redis refused the login or a command for the user: waiting does not fix it."""

    exit_code = EXIT_NOPERM


class UsageError(EdgedError):
    """The command line asked for something that cannot be done."""

    exit_code = EXIT_USAGE
