from django import template

from infrai.lib.money import display_usd

register = template.Library()


@register.filter
def usd(nano: int) -> str:
    return display_usd(int(nano or 0))
