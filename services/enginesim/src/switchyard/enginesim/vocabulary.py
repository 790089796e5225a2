"""The fixed word list the simulated model speaks, and the tokenizer knows as whole tokens.

Order matters: token ids are positions in the tokenizer's table, so append new words at
the end rather than sorting or inserting, or every id after the change moves.
"""

from __future__ import annotations

from typing import Final

_TEXT: Final = """
    i you he she we they me him her us my your his our its their mine yours hello hi hey
    yes no please thanks thank sorry okay do does did done am are was were be being get
    got want need would should must shall might here why who whom whose than too again
    world people thing things year years way ways life man woman child work home
    the of and to in is it that for on with as was be by this are or from at an have not
    but all can which one will more about there their if what when up out so use into time
    has two like other some these could then them first been its now may only new after
    also any most over such where through back much before well way even because good each
    those very still just many day how both between under never same last long great small
    large system model data request response token stream server client engine queue cache
    memory network service cluster node service value number string object array field
    record result error status signal report answer question context window batch prompt
    output input message content summary issue ticket order account payment invoice refund
    delivery package product customer support agent team user admin policy price plan
    update change review check test build deploy release version feature option setting
    config limit rate level score range state event action task job step stage phase
    green blue red yellow orange purple black white silver golden bright dark quiet loud
    quick slow early late simple clear open closed ready busy idle active stable fresh
    river mountain forest ocean valley garden city village harbor bridge road station
    morning evening night winter summer spring autumn weather cloud rain snow wind storm
    light sound color shape paper letter story picture music voice language word sentence
    idea reason method process pattern example detail part piece point line edge center
    north south east west left right upper lower inner outer front side middle top bottom
    make take give find keep hold bring send read write open close start stop wait run
    move turn show tell ask help learn know think feel seem look watch listen speak call
    work play build grow carry follow lead leave stay return reach pass cross rise fall
    always often sometimes usually rarely soon later today tomorrow together almost enough
    quite rather perhaps maybe likely certainly indeed however therefore meanwhile
    new old young high low near far full empty strong weak warm cold hot cool dry wet
    happy calm careful curious gentle honest kind polite proud brave clever patient
    important possible available different common special general public private local
    global final initial primary secondary normal urgent critical minor major
    billing shipping technical account security feedback complaint inquiry request
    positive negative neutral mixed low medium high
"""

WORDS: Final[tuple[str, ...]] = tuple(dict.fromkeys(_TEXT.split()))
"""Lowercase ASCII words, each a `\\w+` run, without duplicates."""
