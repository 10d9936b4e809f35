"""Built-in prompt-injection rules, pure Python data.

Most rules match the compact skeleton (text.skeleton): case-folded, look-alike
letters and leetspeak mapped to a-z, everything else removed, so
"I.g.n.0.r.e  prev1ous instructi0ns", "ＩＧＮＯＲＥ PREVIOUS" and
"іgnоrе prеvіоus" (Cyrillic) all read "ignorepreviousinstructions". Words in
a pattern are therefore written without spaces, and filler words between the
parts of a phrase come from closed lists rather than free gaps: free gaps
over a text without word boundaries block benign prompts ("ignore the typos
in my previous message").

A rule that needs word boundaries (a persona called "DAN" must not match
"dangerous") matches the spaced skeleton, where words are separated by single
spaces and letters spaced apart ("d a n") are joined.

Each rule lists trigger words, one of which every match contains; the regex
runs only when the one automaton pass over the skeleton found one.
"""

from __future__ import annotations

import re

from headrace.services.sanitizer.rules import (
    PROMPT_ONLY,
    Action,
    PatternRule,
    Rule,
    SkeletonRule,
)


def _alt(*words: str) -> str:
    """A non-capturing alternation, longest words first."""
    return "(?:" + "|".join(sorted(set(words), key=lambda w: (-len(w), w))) + ")"


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# --- ignore previous instructions ---------------------------------------------------

_IGNORE_VERBS = _words(
    """ignore ignoring disregard disregarding forget forgetting override overriding
    overrule bypass bypassing neglect dismiss discard abandon setaside putaside
    throwout throwaway nolongerfollow stopfollowing donotfollow dontfollow
    donotobey dontobey stopobeying nolongerobey"""
)
_FILLERS = _words(
    """all any of the your my our these those every each and or previous previously
    prior above earlier system initial original existing current other former
    preceding foregoing given old safety ethical content core hidden secret internal
    developer openai"""
)
_QUALIFIERS = _words(
    """previous previously prior preceding earlier above former foregoing original
    initial your system all every developer hidden existing old"""
)
_TARGETS = _words(
    """instruction instructions instructed prompt prompts rule rules directions
    directive directives guideline guidelines commands orders constraint constraints
    restriction restrictions limitations programming guidance policies policy
    safeguard safeguards guardrail guardrails filter filters training conditioning
    context ethics morals principles protocol protocols"""
)
_IGNORE_EN = (
    f"{_alt(*_IGNORE_VERBS)}{_alt(*_FILLERS)}{{0,4}}{_alt(*_QUALIFIERS)}"
    f"{_alt(*_FILLERS)}{{0,3}}{_alt(*_TARGETS)}"
)
_IGNORE_DE = (
    "(?:ignoriere|ignorier|vergiss|missachte|ubergehe|uebergehe)"
    "(?:alle|die|deine|samtliche|saemtliche|bisherigen|vorherigen|vorigen|obigen|"
    "fruheren|frueheren|alten|ursprunglichen|urspruenglichen)+"
    "(?:anweisungen|instruktionen|regeln|befehle|vorgaben|anordnungen)"
)
_IGNORE_FR = (
    "(?:ignore|ignorez|oublie|oubliez|neglige|negligez)"
    "(?:toutes|tous|les|tes|vos|ces|des)*"
    "(?:instructions|consignes|regles|directives|ordres)"
    "(?:precedentes|precedents|anterieures|cidessus|initiales|originales)"
)
_IGNORE_ES = (
    "(?:ignora|ignore|ignoren|olvida|olvide|olviden|omite)"
    "(?:todas|todos|las|los|tus|sus)*"
    "(?:instrucciones|reglas|indicaciones|ordenes|directivas)"
    "(?:anteriores|previas|precedentes|iniciales|originales)"
)

# --- disregard the above ------------------------------------------------------------

_ABOVE_FILLERS = _words(
    """all everything anything of the that what whatever which is was has have been
    you ve were written said stated mentioned given wrote told typed text content
    stuff instructions message messages words sentences lines"""
)
_DISREGARD_ABOVE = (
    f"(?:ignore|disregard|forget|overlook|dismiss){_alt(*_ABOVE_FILLERS)}{{0,6}}"
    "(?:above|before|previously|priortothis|beforethis|sofar|uptothispoint|uptonow|upuntilnow)"
)

# --- forget your instructions -------------------------------------------------------

_FORGET = (
    "(?:forget|erase|wipe|clear|reset|delete|purge)(?:all|everything|anything|what)"
    "(?:that)?(?:you|youve|youhave|youre)(?:have|ve|were|was|been|already|ever|previously|just)*"
    "(?:told|taught|learned|learnt|instructed|programmed|trained)"
    "|(?:reset|wipe|clear|erase|purge|delete)your(?:memory|instructions|programming|rules|training|directives)"
)

# --- new instructions / system override --------------------------------------------

_NEW_INSTRUCTIONS = (
    "your(?:new|updated|real|actual|true|revised|only)(?:system)?"
    "(?:instructions|directives|orders|programming|systemprompt|prompt|rules|guidelines|objective|mission|purpose)"
    "(?:are|is|now|follow|asfollows|below|from)"
    "|(?:new|updated|revised)(?:system)(?:prompt|instructions|message|directives)"
)
_SYSTEM_OVERRIDE = (
    "(?:system|admin|administrator|developer|root|sudo|security)(?:override|overwrite)"
    "|systemprompt(?:override|update|overwrite|injection)"
    "|(?:enter|enable|activate|begin)(?:admin|administrator|sudo|root|maintenance|override)mode"
)

# --- system prompt extraction --------------------------------------------------------

_REVEAL_VERBS = _words(
    """repeat print reveal display output disclose leak dump recite expose echo
    regurgitate show tell give share list write provide type paste copy spell
    summarize summarise translate"""
)
_REVEAL_FILLERS = _words(
    """me us out back verbatim exactly word for all of everything in it them again
    please now to"""
)
_PROMPT_NAMES = _words(
    """systemprompt systemmessage systeminstructions systemrules preprompt metaprompt
    hiddenprompt hiddeninstructions hiddenrules secretinstructions secretprompt
    secretrules internalinstructions internalrules developerinstructions
    developermessage developerprompt initialprompt originalprompt
    initialinstructions originalinstructions firstprompt startupprompt
    promptabove instructionsabove"""
)
_PROMPT_ADJECTIVES = _words(
    """full entire complete whole exact actual original initial first hidden secret
    internal real current confidential starting very top above underlying"""
)
_EXTRACTION = (
    f"{_alt(*_REVEAL_VERBS)}{_alt(*_REVEAL_FILLERS)}{{0,5}}(?:your|the|thy)"
    f"{_alt(*_PROMPT_ADJECTIVES)}{{0,3}}{_alt(*_PROMPT_NAMES)}"
    f"|{_alt(*_REVEAL_VERBS)}{_alt(*_REVEAL_FILLERS)}{{0,5}}your{_alt(*_PROMPT_ADJECTIVES)}{{0,3}}"
    "(?:instructions|prompt|directives|programming|configuration|initialization|initialisation)"
    "|what(?:are|were|is|was|s|re)your"
    f"{_alt(*_PROMPT_ADJECTIVES, 'system')}{{0,3}}"
    "(?:instructions|prompt|directives|programming|configuration|systemmessage)"
    "|what(?:are|were|is|was|s)the"
    f"{_alt(*_PROMPT_ADJECTIVES)}{{0,3}}"
    "(?:system|hidden|secret|initial|original|internal|developer)(?:prompt|instructions|message|directives)"
    "|what(?:instructions|directives|prompt|rules|guidelines)(?:were|was|have|did|are|had)(?:you)(?:been)?"
    "(?:given|told|provided|programmed|trained|instructed|fed)"
    "|(?:repeat|print|output|recite|copy|echo|write)(?:out)?(?:all|the|every|each)?"
    "(?:words|text|sentences|lines|content|tokens|everything|characters)"
    "(?:above|before|preceding|priortothis|sofar)?(?:starting|beginning)(?:with|from|at)"
    f"|{_alt(*_REVEAL_VERBS)}[a-z]{{0,30}}?(?:beginning|start|top)of(?:the|this|our)?"
    "(?:conversation|chat|prompt|context|session)"
)

# --- personas and jailbreak modes ----------------------------------------------------

_ROLE_VERBS = (
    "you are",
    "youre",
    "you re",
    "act as",
    "acting as",
    "pretend to be",
    "pretend you are",
    "pretend you re",
    "roleplay as",
    "role play as",
    "play the role of",
    "respond as",
    "answer as",
    "reply as",
    "speak as",
    "switch to",
    "you will be",
    "you ll be",
    "youll be",
    "become",
    "call yourself",
    "you must be",
    "now be",
)
_ROLE_FILLERS = (
    "now",
    "going to",
    "gonna",
    "act as",
    "a",
    "an",
    "the",
    "my",
    "called",
    "named",
    "an ai called",
    "an ai named",
    "a model called",
    "from now on",
    "fully",
    "the ai",
)
_PERSONAS = (
    "dan",
    "stan",
    "aim",
    "mongo tom",
    "evil confidant",
    "evilbot",
    "evil bot",
    "betterdan",
    "better dan",
    "antidan",
    "anti dan",
    "apophis",
    "ucar",
    "dev mode",
    "devmode",
    "jailbroken",
    "jailbreak",
    "unfiltered",
    "unrestricted",
    "uncensored",
    "unaligned",
    "unhinged",
    "chaos gpt",
    "chaosgpt",
    "freedomgpt",
    "wormgpt",
    "developer mode",
    "god mode",
)
_PERSONA = (
    f" {_alt(*_ROLE_VERBS)}(?: {_alt(*_ROLE_FILLERS)})* {_alt(*_PERSONAS)} "
    f"| (?:stay|remain|keep) (?:in character as|as) {_alt('dan', 'stan', 'aim')} "
)
_ROLE_TRIGGERS = tuple({v.replace(" ", "") for v in _ROLE_VERBS} | {"stay", "remain", "keep"})

_AI_NAMES = _words("you yourself chatgpt gpt assistant ai model llm bot claude gemini llama")
_MODE_FILLERS = _words(
    """are re will shall must now be have has entered enter act acting as if in into
    with operate operating run running go going switch switched to the a an been put
    placed always fully"""
)
_MODES = _words(
    "developer dev debug god jailbreak jailbroken unrestricted unfiltered uncensored evil sudo opposite chaos dan maximum"
)
_NO_LIMITS_FILLERS = _words(
    """that which who has have is are with now completely totally fully entirely free
    freed from of by bound been no longer any absolutely literally truly"""
)
_NO_LIMITS_OBJECTS_FILLERS = _words(
    """any all the your its of ethical moral content safety usual typical normal openai
    standard programming built in restrictive such"""
)
_LIMITS = _words(
    """restrictions filters filtering censorship guidelines ethics morals morality
    boundaries guardrails safeguards policies contentpolicy constraints confines rules"""
)
_JAILBREAK = (
    "(?:dan|dans|standsfor|called|named)[a-z]{0,12}?doanythingnow"
    "|doanythingnow[a-z]{0,8}?(?:dan|mode|persona)"
    f"|{_alt(*_AI_NAMES)}{_alt(*_MODE_FILLERS)}{{0,6}}{_alt(*_MODES)}mode"
    "|(?:jailbreakmode|danmode)(?:enabled|activated|engaged|on|output)"
    f"|{_alt(*_AI_NAMES, 'persona', 'character', 'version', 'chatbot')}"
    f"{_alt(*_NO_LIMITS_FILLERS)}{{0,6}}"
    "(?:no|zero|without|unboundby|notboundby|freefrom|freedfrom|liberatedfrom|releasedfrom|"
    "unshackledfrom|exemptfrom|outsideof|beyond)"
    f"{_alt(*_NO_LIMITS_OBJECTS_FILLERS)}{{0,4}}{_alt(*_LIMITS)}"
    "|(?:you|yourself)(?:are|have|has|been|now|hereby)*"
    "(?:freed|liberated|unshackled|unchained|unleashed|jailbroken|brokenfree)"
)
_JAILBREAK_TRIGGERS = (
    "doanythingnow",
    "mode",
    "restrictions",
    "filter",
    "censorship",
    "guidelines",
    "ethics",
    "morals",
    "boundaries",
    "guardrails",
    "safeguards",
    "policies",
    "contentpolicy",
    "constraints",
    "confines",
    "rules",
    "freed",
    "liberated",
    "unshackled",
    "unchained",
    "unleashed",
    "jailbroken",
    "brokenfree",
)

# --- chat-template role tokens -------------------------------------------------------

_ROLE_TOKENS = re.compile(
    r"<\|im_start\|>\s*(?:system|assistant)|<\|start_header_id\|>\s*(?:system|assistant)"
    r"|<start_of_turn>\s*(?:system|model)|\[/?INST\]|<</?SYS>>|<\|(?:system|endoftext|eot_id)\|>",
    re.IGNORECASE,
)


def _rule(rule_id: str, pattern: str, triggers: tuple[str, ...], view: str = "compact") -> Rule:
    return SkeletonRule(
        id=rule_id,
        category="injection",
        action=Action.BLOCK,
        pattern=re.compile(pattern),
        view="spaced" if view == "spaced" else "compact",
        triggers=triggers,
    )


INJECTION_RULES: tuple[Rule, ...] = (
    _rule(
        "injection.ignore_previous",
        f"{_IGNORE_EN}|{_IGNORE_DE}|{_IGNORE_FR}|{_IGNORE_ES}",
        (
            *_IGNORE_VERBS,
            *_words("ignorier vergiss missachte ubergehe uebergehe oublie neglige ignora olvid omite"),
        ),
    ),
    _rule(
        "injection.disregard_above",
        _DISREGARD_ABOVE,
        _words("ignore disregard forget overlook dismiss"),
    ),
    _rule(
        "injection.forget_instructions",
        _FORGET,
        _words("forget erase wipe clear reset delete purge"),
    ),
    _rule("injection.new_instructions", _NEW_INSTRUCTIONS, _words("your system")),
    _rule(
        "injection.system_override",
        _SYSTEM_OVERRIDE,
        _words("override overwrite update injection mode"),
    ),
    _rule(
        "injection.prompt_extraction",
        _EXTRACTION,
        (*_REVEAL_VERBS, "what"),
    ),
    _rule("injection.persona", _PERSONA, _ROLE_TRIGGERS, view="spaced"),
    _rule("injection.jailbreak", _JAILBREAK, _JAILBREAK_TRIGGERS),
    PatternRule(
        id="injection.role_tokens",
        category="injection",
        action=Action.BLOCK,
        directions=PROMPT_ONLY,
        pattern=_ROLE_TOKENS,
        max_length=40,
        partial=re.compile(r"(?s:.{1,40})\Z"),
    ),
)
"""Prompt-injection rules, on by default (`injection_defence`), prompts only."""
