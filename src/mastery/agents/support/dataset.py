"""Labelled customer messages for L22: several per intent, some ambiguous (two intents plausible; the label is
the one a support lead would route to), and some that fit no policy ("other": a person handles them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    message: str
    intent: str  # the gold intent (one of mastery.agents.support.ALL_INTENTS)
    ambiguous: bool = False


EXAMPLES = (
    # refund
    Example("Hi, I bought running shoes last week and they are too small. How do I send them back and get my money?",
            "refund"),
    Example("The blender I received is the wrong colour. I want a refund please.", "refund"),
    Example("Can I return a jacket I ordered 20 days ago? I never wore it, tags are still on.", "refund"),
    Example("I returned the lamp two weeks ago and still have not seen the money on my card.", "refund"),
    # shipping
    Example("Where is my order #48213? It was supposed to arrive on Monday.", "shipping"),
    Example("The tracking number you sent has shown no update for 12 days. Is my parcel lost?", "shipping"),
    Example("How long does express delivery take if I order today?", "shipping"),
    Example("I need to change the delivery address for the order I placed an hour ago.", "shipping"),
    # account_access
    Example("I forgot my password and the reset email never arrives.", "account_access"),
    Example("My account says it is locked after I typed the wrong password a few times. What now?", "account_access"),
    Example("I got a new phone and lost my two-factor codes, I can't log in anymore.", "account_access"),
    Example("The password reset link says it has expired. Can you send a new one?", "account_access"),
    # billing
    Example("I was charged twice for the same order on March 3rd, 49.90 each time.", "billing"),
    Example("Can you add my company's VAT number to last month's invoice?", "billing"),
    Example("Where can I download a PDF invoice for my payment?", "billing"),
    Example("My card payment failed but I see a pending charge on my bank statement.", "billing"),
    # cancellation
    Example("Please cancel my subscription, I don't use it anymore.", "cancellation"),
    Example("If I cancel my monthly plan today, do I get money back for the rest of the month?", "cancellation"),
    Example("I renewed my annual plan by mistake 5 days ago, I want to cancel it.", "cancellation"),
    Example("Can I pause my membership for two months instead of ending it?", "cancellation"),
    # privacy
    Example("Please delete my account and all the personal data you hold about me.", "privacy"),
    Example("Under GDPR I request a copy of all data you have stored about me.", "privacy"),
    Example("How do I stop getting your marketing newsletters?", "privacy"),
    Example("Do you sell my personal information to advertisers?", "privacy"),
    # security
    Example("I got an email asking me to confirm my card number on a strange website. Is this really from you?",
            "security"),
    Example("Someone logged into my account and placed an order I did not make!", "security"),
    Example("I found a vulnerability on your website that exposes other users' orders. Where do I report it?",
            "security"),
    Example("I received an SMS with a link saying my package is held, asking for a fee. Phishing?", "security"),
    # warranty
    Example("My headphones stopped charging after 8 months. Are they still under warranty?", "warranty"),
    Example("The screen of the tablet I bought last year has dead pixels. Can you repair it?", "warranty"),
    Example("My smartwatch has a manufacturing defect, the strap pin broke. How do I make a claim?", "warranty"),
    Example("How long is the warranty on your devices?", "warranty"),
    # ambiguous: two intents are plausible; the label is where a support lead would send it
    Example("I cancelled my plan last month but you charged my card again this month.", "billing", ambiguous=True),
    Example("The speaker arrived broken in the box. I want my money back.", "refund", ambiguous=True),
    Example("My parcel shows delivered but it is not here, and I suspect someone used my account to change the "
            "address.", "security", ambiguous=True),
    Example("The coffee machine I bought 3 months ago leaks water. Can I return it?", "warranty", ambiguous=True),
    # other: no policy fits; a person answers
    Example("Do you have a physical store in Lisbon?", "other"),
    Example("I would like to apply for a job in your customer service team.", "other"),
    Example("Are you planning to sell the blue version of the backpack again?", "other"),
    Example("Can I become a reseller of your products in my country?", "other"),
    Example("Your delivery driver was very friendly today, please pass on my thanks!", "other"),
)

# The tiny preset's handful: one message per route the graph can take (with the scripted model, see scripted.py).
TINY_EXAMPLES = (EXAMPLES[0], EXAMPLES[4], EXAMPLES[12], EXAMPLES[24], EXAMPLES[36])
