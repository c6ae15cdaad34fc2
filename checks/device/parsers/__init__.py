"""One module per platform, each with one ``parse_*`` function per command and a ``COMMANDS`` table.

Platform modules are named as Netmiko and ntc-templates name the platforms. Every parser takes the
raw captured output (it runs :func:`checks.device.clean.clean` itself) and returns
:class:`checks.device.model.Facts`, or raises :class:`checks.device.errors.DeviceParseError`.
"""
