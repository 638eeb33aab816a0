"""SQuAD-like requests: English paragraphs of 80-220 words, each with a question. The benchmark
sends them, and int8 graphs are calibrated on them (qa/graphs.py) unless the user brings samples.

Made from templates and a fixed seed (no data set download): the same list on every run and
every machine, so peer and ours answer exactly the same requests. With the stand-in model the
answers are meaningless; what matters is realistic tokenisation and length.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

SEED = 1234
MIN_WORDS, MAX_WORDS = 80, 220

PEOPLE = [
    "Margaret Holloway",
    "Tomas Lindqvist",
    "Aiko Tanaka",
    "Samuel Okafor",
    "Elena Petrova",
    "Rafael Mendes",
    "Clara Beaumont",
    "Henrik Dahl",
    "Priya Raman",
    "Jonas Weber",
    "Fatima Al-Sayed",
    "William Ashford",
    "Lucia Romano",
    "Kwame Mensah",
    "Ingrid Solberg",
    "Daniel Foster",
    "Mei Lin",
    "Arthur Pembroke",
    "Sofia Castillo",
    "Nikolai Orlov",
    "Grace Whitfield",
    "Hugo Marchetti",
    "Amara Nwosu",
    "Edward Linton",
]
PLACES = [
    "Aldermoor",
    "the Vellan Valley",
    "Port Essington",
    "Kaltenbrunn",
    "the island of Merrow",
    "Lakeshore",
    "Santa Brisa",
    "Northfield",
    "the Corran Highlands",
    "Eastwick",
    "Valdoria",
    "Greyhaven",
    "Marlow Bay",
    "the Tamsin Delta",
    "Oakridge",
    "Bellcastle",
    "Riverton",
    "the Sorrel Plains",
    "Westmarch",
    "Cedar Falls",
]
ORGS = [
    "the Royal Society of Engineers",
    "the Aldermoor Observatory",
    "the Northern Railway Company",
    "the Institute of Marine Biology",
    "the National Library",
    "the Merrow Botanical Garden",
    "the Coastal Trading Guild",
    "the University of Greyhaven",
    "the Westmarch Orchestra",
    "the Bellcastle Museum of Art",
    "the Valdorian Academy of Sciences",
    "the Riverton Medical School",
]
THINGS = [
    "a steam-powered pump",
    "a reflecting telescope",
    "a suspension bridge",
    "a printing press",
    "a vaccine against river fever",
    "a lighthouse lens",
    "a mechanical loom",
    "a tide-prediction machine",
    "a public water system",
    "a botanical survey",
    "a choral symphony",
    "a map of the northern coast",
    "a seed bank",
    "a weather station",
    "a glass-domed greenhouse",
    "a canal lock",
]
FIELDS = [
    "astronomy",
    "engineering",
    "medicine",
    "botany",
    "music",
    "cartography",
    "chemistry",
    "architecture",
    "economics",
    "geology",
    "linguistics",
    "navigation",
]
MATERIALS = ["granite", "cast iron", "oak timber", "red brick", "limestone", "steel", "marble", "sandstone"]
REASONS = [
    "the harbour had silted up after a series of storms",
    "the old bridge could no longer carry the growing traffic",
    "an outbreak of fever had spread through the lower town",
    "the city council wanted to attract scholars from abroad",
    "the harvests had failed for three consecutive years",
    "merchants demanded a faster route to the coast",
]
COLOURS = ["green", "blue", "white", "grey", "red", "golden"]

# Each fact: (sentence template, question template, answer slot). Slots are filled from one dict.
FACTS = [
    (
        "{place} was founded in {year} by {person}, who had travelled there from {place2}.",
        "Who founded {place}?",
        "person",
    ),
    (
        "In {year}, {person} built {thing} near the centre of {place}.",
        "What did {person} build in {place}?",
        "thing",
    ),
    (
        "{org} was established in {year2} to promote the study of {field}.",
        "When was {org} established?",
        "year2",
    ),
    (
        "The main hall of {org} is made of {material} and can hold {count} people.",
        "What is the main hall of {org} made of?",
        "material",
    ),
    (
        "{person2} became the first director of {org} after a long career in {field}.",
        "Who was the first director of {org}?",
        "person2",
    ),
    ("The project was started because {reason}.", "Why was the project started?", "reason"),
    (
        "{place} lies about {distance} kilometres north of {place2}, on the banks of a wide river.",
        "How far is {place} from {place2}?",
        "distance",
    ),
    (
        "By {year3}, the population of {place} had grown to roughly {population} inhabitants.",
        "What was the population of {place} by {year3}?",
        "population",
    ),
    (
        "The flag of {place} is {colour} with a white star in the upper corner.",
        "What colour is the flag of {place}?",
        "colour",
    ),
    (
        "{person2} was born in {place2} in {year4} and studied {field} at {org}.",
        "Where was {person2} born?",
        "place2",
    ),
]
FILLER = [
    "Visitors often remark on the quiet streets and the old stone houses near the market square.",
    "During the summer months the town hosts a festival that lasts for nearly two weeks.",
    "Local historians have written several books about the early years of the settlement.",
    "The surrounding hills are covered with forests of pine and birch, which supply timber for the region.",
    "Trade with neighbouring towns increased steadily throughout the following decades.",
    "Many of the original buildings were restored after a fire damaged the eastern district.",
    "Records from that period are kept in the archives of the town hall and are open to the public.",
    "The climate is mild, with wet winters and long, dry summers that favour the cultivation of grapes.",
    "Several schools and a small hospital were opened as the number of residents grew.",
    "A railway line connecting the town with the capital was completed some years later.",
    "Fishing remained an important source of income for families living along the shore.",
    "Critics at the time praised the work for its ambition, although some doubted its practical value.",
    "Today the site attracts thousands of tourists every year and appears on many postcards.",
    "The design was later copied by engineers in other countries, with varying degrees of success.",
]


@dataclass(frozen=True)
class CorpusQuestion:
    """A question with its context and the expected answer text (from the template): one benchmark request."""

    index: int
    question: str
    context: str
    expected: str

    def body(self) -> dict:
        """The request body in the Hugging Face container's schema, which both servers accept."""
        return {"inputs": {"question": self.question, "context": self.context}}


def _slots(rng: random.Random) -> dict[str, str]:
    person, person2 = rng.sample(PEOPLE, 2)
    place, place2 = rng.sample(PLACES, 2)
    year = rng.randint(1620, 1890)
    return {
        "person": person,
        "person2": person2,
        "place": place,
        "place2": place2,
        "org": rng.choice(ORGS),
        "thing": rng.choice(THINGS),
        "field": rng.choice(FIELDS),
        "material": rng.choice(MATERIALS),
        "reason": rng.choice(REASONS),
        "colour": rng.choice(COLOURS),
        "year": str(year),
        "year2": str(year + rng.randint(5, 60)),
        "year3": str(year + rng.randint(61, 130)),
        "year4": str(year - rng.randint(20, 60)),
        "count": str(rng.randint(2, 40) * 50),
        "distance": str(rng.randint(12, 480)),
        "population": f"{rng.randint(3, 950) * 100:,}",
    }


def _capitalise(sentence: str) -> str:
    return sentence[0].upper() + sentence[1:]


def make_request(index: int, rng: random.Random) -> CorpusQuestion:
    slots = _slots(rng)
    target_words = rng.randint(MIN_WORDS, MAX_WORDS)
    facts = rng.sample(FACTS, len(FACTS))
    fillers = rng.sample(FILLER, len(FILLER))
    asked = facts[0]
    sentences: list[str] = []
    words = 0
    # Alternate facts and filler until the paragraph is long enough; the asked fact comes first.
    pool = [s for pair in zip(facts, fillers, strict=False) for s in pair] + fillers[len(facts) :]
    for item in pool:
        text = _capitalise(item[0].format(**slots)) if isinstance(item, tuple) else item
        n = len(text.split())
        if words + n > MAX_WORDS:
            continue
        sentences.append(text)
        words += n
        if words >= target_words:
            break
    rng.shuffle(sentences)
    context = " ".join(sentences)
    return CorpusQuestion(index, asked[1].format(**slots), context, slots[asked[2]])


def make_requests(count: int = 400, seed: int = SEED) -> list[CorpusQuestion]:
    """`count` requests, the same for a given seed; contexts of MIN_WORDS..MAX_WORDS words."""
    rng = random.Random(seed)
    out: list[CorpusQuestion] = []
    while len(out) < count:
        req = make_request(len(out), rng)
        if MIN_WORDS <= len(req.context.split()) <= MAX_WORDS:
            out.append(req)
    return out
