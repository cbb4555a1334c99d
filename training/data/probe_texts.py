"""The fixed probe set on which every export is checked against its PyTorch SentenceTransformer.

Varied on purpose, because each kind of text has broken some export before: a single word and a single
character (pooling over two or three tokens), digits and units, accents and non-Latin scripts (normaliser and
word-piece paths), emoji and symbols (unknown tokens), code, whitespace runs, and one text far longer than any
`max_seq_length` we serve (truncation, and the padded batch that every other text then shares).
"""

from __future__ import annotations

# ~340 words: longer than 256 word pieces, so it is truncated by MiniLM (256) and by the test model (64).
LONG_TEXT = " ".join(
    [
        "The tenant shall pay the rent on the first day of each month, and if the rent is more than ten days",
        "late the landlord may charge a late fee of five percent of the monthly rent, provided that notice of",
        "the fee was given in writing at the start of the lease.",
    ]
    + [
        f"Clause {n}: the parties agree that any breach of this agreement, including failure to maintain the "
        f"premises, damage beyond normal wear and tear, or unpaid utilities, will be deducted from the deposit, "
        f"and the remaining balance returned within {n + 13} days after the lease ends."
        for n in range(1, 9)
    ]
)

PROBE_TEXTS: tuple[str, ...] = (
    "What is the maximum daily dose of ibuprofen for an adult?",
    "Can my landlord keep my deposit for normal wear and tear?",
    "heart",
    "a",
    "Blood pressure 140/90 mmHg at 08:30, pulse 72 bpm, temperature 37.2 °C.",
    "Invoice #2024-0017: total due 1,250.00 EUR by 31.12.2024.",
    "3.14159 2.71828 1.41421 42 1000000",
    "Der Mieter muss die Kaution innerhalb von drei Monaten zurückerhalten.",
    "Le patient présente une fièvre élevée et une toux persistante depuis cinq jours.",
    "¿Cuáles son los efectos secundarios más comunes de la metformina?",
    "Врач назначил антибиотики на семь дней.",
    "患者は毎日二回薬を飲む必要があります。",
    "这份合同的终止条款是什么意思？",
    "ما هي أعراض ارتفاع ضغط الدم؟",
    "I can't believe it's not butter!!! 😂🧈",
    "def add(a, b):\n    return a + b  # simple function",
    "SELECT name, dose FROM prescriptions WHERE patient_id = 17;",
    "   leading and trailing spaces   ",
    "tabs\tand\nnew\nlines\tbetween words",
    "UPPER CASE SHOUTING ABOUT INSURANCE COVERAGE",
    "The court held that the indemnify and hold harmless clause did not cover gross negligence.",
    "After the trial, the study found no significant effect of the therapy on tumor size.",
    "Does my insurance policy cover a doctor visit for a child with flu?",
    "Termination notice must be given thirty days before the end of the month.",
    "kidney liver lung",
    "Is it safe to take paracetamol and ibuprofen together, and how long should I wait between doses?",
    "https://example.com/path?query=lease&id=42",
    "e-mail: support@example.org; phone: +1 (555) 010-9999",
    "No.",
    LONG_TEXT,
)
