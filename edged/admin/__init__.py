"""The operator library behind the inspection and operator commands.

Queries return msgspec structs and never print; actions (claim, ack, dead letters) are atomic
where Redis lets them be. Nothing here imports ``edged.consume``: an operator host needs no
consumer.
"""
