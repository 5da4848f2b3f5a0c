"""The embedded default dataset: a deterministic synthetic text-to-SQL generator.

``generate_synthetic(out_dir)`` writes a folder in the Spider layout (``train.json``,
``dev.json``, ``tables.json``, ``database/<db>/<db>.sqlite``) that ``load_spider`` reads
unchanged. Nothing is committed: the data is generated on demand, byte-identical for a seed.

Design: databases are built from a pool of domain designs (school, store, hospital, ...) whose
table and column names come from one shared everyday vocabulary (name, age, city, price,
salary, year, ..., ``<parent>_id`` foreign keys to ``id``), so that held-out databases reuse
words seen in training in new combinations. The first variant of a domain uses those base names;
later variants (a domain repeats when more databases are asked for than there are domains) rename
tables and columns from per-concept synonym pools (student/pupil/learner, salary/pay/wage, ...),
so that the same domain yields different vocabularies and a model has to copy names from the
question and schema rather than memorize them. Questions mention table names, column names
(underscores as spaces) and literal values verbatim, so the gold SQL can be assembled by
copying from the question and the schema. The split is by database: ``dev.json`` uses
databases of domains that no training database uses (as long as there are enough domains).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import sqlite3
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from ..errors import DataError, run_cli
from .readers import load_spider
from .schema import pluralize

VERSION = 2  # 2: synonym renaming of tables/columns in later variants
META_FILE = "synthetic_meta.json"

# ----------------------------------------------------------------------------------------
# Value pools (small word lists; no apostrophes so literals need no escaping)
# ----------------------------------------------------------------------------------------
FIRST = ["Anna", "Ben", "Carla", "David", "Elena", "Frank", "Grace", "Hugo", "Irene", "Jack",
         "Karen", "Leo", "Maria", "Nina", "Oscar", "Paul", "Quinn", "Rosa", "Sam", "Tina",
         "Victor", "Wendy", "Yuri", "Zoe", "Adam", "Bella", "Chris", "Diana", "Ethan", "Fiona"]
LAST = ["Smith", "Garcia", "Chen", "Novak", "Brown", "Kim", "Muller", "Rossi", "Silva", "Tanaka",
        "Wilson", "Lopez", "Ivanova", "Khan", "Dubois", "Jensen", "Murphy", "Costa", "Larsen", "Park"]
CITIES = ["Paris", "London", "Berlin", "Madrid", "Rome", "Tokyo", "Boston", "Chicago", "Toronto",
          "Sydney", "Dublin", "Oslo", "Lisbon", "Vienna", "Prague", "Seattle"]
COUNTRIES = ["France", "Germany", "Spain", "Italy", "Japan", "Canada", "Brazil", "India", "Mexico",
             "Norway", "Kenya", "Egypt"]
PLACE = ["Oak", "Maple", "Cedar", "Pine", "Riverside", "Lincoln", "Sunset", "Lakeside", "Hillcrest",
         "Westwood", "Northgate", "Greenfield", "Brookside", "Fairview", "Kingston", "Harbor"]
ADJ = ["Silent", "Golden", "Hidden", "Broken", "Bright", "Dark", "Lost", "Wild", "Blue", "Red",
       "Green", "Quiet", "Final", "Little", "Great", "Endless"]
NOUN = ["River", "Moon", "Garden", "City", "Road", "Star", "Dream", "Storm", "Forest", "Ocean",
        "Fire", "Window", "Mountain", "Bridge", "Song", "Heart"]
SUBJECTS = ["Math", "Physics", "Chemistry", "Biology", "History", "Art", "Music", "English",
            "Economics", "Geography"]

SUFFIX = {
    "school": ["School", "Academy", "College"], "store": ["Market", "Store", "Outlet"],
    "hospital": ["Hospital", "Clinic", "Medical Center"], "airline": ["Air", "Airways", "Airlines"],
    "library": ["Library", "Reading Room"], "restaurant": ["Kitchen", "Grill", "Bistro", "Cafe"],
    "museum": ["Museum", "Gallery"], "hotel": ["Hotel", "Inn", "Resort"],
    "cinema": ["Cinema", "Theater"],
}


def _combos(a: list[str], b: list[str]) -> list[str]:
    return [f"{x} {y}" for x in a for y in b]


# Text pools: name -> list of values. "Categorical" pools are small (usable in GROUP BY).
POOLS: dict[str, list[str]] = {
    "person": _combos(FIRST, LAST),
    "city": CITIES, "country": COUNTRIES,
    "music_genre": ["Rock", "Jazz", "Pop", "Blues", "Folk", "Classical"],
    "book_genre": ["Mystery", "Fantasy", "History", "Romance", "Science", "Poetry"],
    "movie_genre": ["Drama", "Comedy", "Action", "Horror", "Thriller", "Animation"],
    "subject": SUBJECTS,
    "position": ["Forward", "Guard", "Center", "Goalkeeper", "Defender"],
    "specialty": ["Cardiology", "Neurology", "Pediatrics", "Surgery", "Oncology", "Dermatology"],
    "gender": ["Female", "Male"],
    "status": ["Active", "Completed", "Planned", "Cancelled"],
    "loan_status": ["Returned", "Overdue", "Active"],
    "role": ["Manager", "Developer", "Analyst", "Designer", "Tester"],
    "seat_class": ["Economy", "Business", "First"],
    "payment_method": ["Cash", "Card", "Voucher", "Online"],
    "reason": ["Checkup", "Surgery", "Vaccination", "Consultation", "Therapy"],
    "cuisine": ["Italian", "Chinese", "Mexican", "Indian", "French", "Japanese"],
    "room_type": ["Single", "Double", "Suite", "Family"],
    "theme": ["History", "Science", "Art", "Nature", "Technology"],
    "product_category": ["Electronics", "Toys", "Books", "Garden", "Food", "Clothing"],
    "dish_category": ["Starter", "Main", "Dessert", "Drink", "Side"],
    "membership": ["Gold", "Silver", "Bronze"],
    "ticket_type": ["Adult", "Child", "Student", "Senior"],
    "language": ["English", "French", "Spanish", "German", "Japanese"],
    "department": ["Sales", "Marketing", "Finance", "Research", "Support", "Legal", "Engineering",
                   "Operations", "Design", "Logistics"],
    "team": _combos(CITIES, ["Eagles", "Lions", "Sharks", "Wolves", "Bears", "Tigers", "Hawks"]),
    "product": _combos(["Smart", "Classic", "Mini", "Ultra", "Eco", "Pro", "Deluxe", "Compact"],
                       ["Lamp", "Chair", "Phone", "Kettle", "Backpack", "Watch", "Camera", "Speaker",
                        "Desk", "Bottle"]),
    "course": _combos(SUBJECTS, ["101", "201", "301"]),
    "dish": _combos(["Spicy", "Grilled", "Roasted", "Fresh", "Sweet", "Crispy", "Smoked", "Creamy"],
                    ["Noodles", "Chicken", "Salad", "Soup", "Tacos", "Curry", "Pizza", "Burger",
                     "Salmon", "Cake"]),
    "work": _combos(ADJ, NOUN),  # titles of books, albums, songs, movies, projects, exhibitions
}
for _k, _suf in SUFFIX.items():
    POOLS[_k] = _combos(PLACE, _suf)
CATEGORICAL_MAX = 20  # pools at most this large are used for GROUP BY / equality categories

# Column name -> default pool (text columns); "name"/"title" take the table's pool.
TEXT_COLS = {
    "city": "city", "country": "country", "origin": "city", "destination": "city",
    "subject": "subject", "position": "position", "gender": "gender", "status": "status",
    "payment_method": "payment_method", "language": "language",
}
# Column name -> (low, high, step): shared ranges; a design may override with "col=lo-hi".
NUM_COLS = {
    "age": (18, 75, 1), "salary": (30000, 150000, 500), "price": (5, 500, 1),
    "year": (1960, 2023, 1), "founded_year": (1900, 2020, 1), "open_year": (1950, 2020, 1),
    "capacity": (20, 5000, 10), "size": (5, 2000, 5), "quantity": (0, 500, 1),
    "distance": (100, 9000, 10), "duration": (1, 240, 1), "rating": (1, 10, 1),
    "sales": (1000, 900000, 100), "attendance": (100, 60000, 10), "budget": (10000, 5000000, 1000),
    "height": (160, 215, 1), "score": (0, 100, 1),
}
DATE_RANGES = {"birth_date": (date(1950, 1, 1), date(2008, 12, 31))}
DEFAULT_DATES = (date(2000, 1, 1), date(2023, 12, 31))


def _col_kind(col: str) -> str:
    if col == "id" or col.endswith("_id"):
        return "key"
    if col == "date" or col.endswith("_date"):
        return "time"
    if col in NUM_COLS:
        return "number"
    return "text"


# ----------------------------------------------------------------------------------------
# Domain designs. Column words are shared across domains (each appears in several), with
# domain-specific values where needed: "category:seat_class" is a column `category` drawn from
# the seat_class pool; "duration=1-14" narrows a number's range.
# ----------------------------------------------------------------------------------------
@dataclass
class TableDef:
    name: str
    cols: list[str]               # "col", "col:pool" or "col=lo-hi"; keys excluded
    parents: list[str] = field(default_factory=list)
    rows: tuple[int, int] = (40, 120)
    pool: str = "person"          # pool for name/title
    optional: bool = False        # may be dropped in variants


def T(name, cols, parents=(), rows=(40, 120), pool="person", optional=False) -> TableDef:
    return TableDef(name, list(cols), list(parents), rows, pool, optional)


DOMAINS: dict[str, list[TableDef]] = {
    "school": [
        T("school", ["name", "city", "founded_year", "capacity"], rows=(15, 40), pool="school"),
        T("teacher", ["name", "age", "salary", "subject", "hire_date"], ["school"], (40, 120)),
        T("student", ["name", "age", "score", "city", "birth_date"], ["school"], (80, 200), optional=True),
        T("course", ["title", "subject", "duration=1-6", "start_date"], ["teacher"], (40, 120),
          pool="course"),
    ],
    "store": [
        T("store", ["name", "city", "size", "open_date"], rows=(15, 40), pool="store", optional=True),
        T("customer", ["name", "age", "city", "category:membership", "join_date"], rows=(60, 200)),
        T("product", ["name", "category:product_category", "price", "quantity", "sales"], rows=(30, 120),
          pool="product"),
        T("purchase", ["payment_method", "quantity=1-20", "date"], ["customer", "product", "store"],
          (100, 200)),
    ],
    "hospital": [
        T("hospital", ["name", "city", "capacity", "open_year"], rows=(10, 30), pool="hospital",
          optional=True),
        T("doctor", ["name", "age", "category:specialty", "salary", "hire_date"], ["hospital"], (30, 90)),
        T("patient", ["name", "age", "gender", "city", "birth_date"], rows=(60, 200)),
        T("appointment", ["category:reason", "price", "date"], ["doctor", "patient"], (100, 200)),
    ],
    "airline": [
        T("airline", ["name", "country", "founded_year", "size=5-300"], rows=(10, 30), pool="airline",
          optional=True),
        T("flight", ["origin", "destination", "distance", "price", "date"], ["airline"], (50, 150)),
        T("passenger", ["name", "age", "country", "birth_date"], rows=(60, 200)),
        T("booking", ["category:seat_class", "price", "date"], ["passenger", "flight"], (100, 200)),
    ],
    "library": [
        T("library", ["name", "city", "capacity", "open_year"], rows=(8, 20), pool="library",
          optional=True),
        T("author", ["name", "country", "gender", "birth_date"], rows=(30, 80)),
        T("book", ["title", "genre:book_genre", "language", "year", "price", "rating"], ["author", "library"],
          (60, 200), pool="work"),
        T("member", ["name", "age", "city", "join_date"], rows=(40, 150)),
        T("loan", ["status:loan_status", "duration=1-60", "start_date"], ["book", "member"], (100, 200)),
    ],
    "music": [
        T("artist", ["name", "country", "age", "genre:music_genre"], rows=(20, 60)),
        T("album", ["title", "genre:music_genre", "year", "rating", "sales"], ["artist"], (40, 120), pool="work"),
        T("song", ["title", "duration=80-400", "rating", "release_date"], ["album"], (80, 200), pool="work"),
        T("concert", ["city", "attendance", "price", "date"], ["artist"], (30, 100), optional=True),
    ],
    "sports": [
        T("team", ["name", "city", "founded_year", "budget"], rows=(10, 24), pool="team"),
        T("player", ["name", "age", "position", "salary", "height", "birth_date"], ["team"], (60, 200)),
        T("coach", ["name", "age", "salary", "country", "start_date"], ["team"], (10, 40), optional=True),
        T("game", ["city", "attendance", "score", "date"], ["team"], (40, 150)),
    ],
    "company": [
        T("department", ["name", "city", "budget"], rows=(6, 10), pool="department", optional=True),
        T("employee", ["name", "age", "gender", "salary", "city", "hire_date"], ["department"], (60, 200)),
        T("project", ["title", "budget", "status", "start_date"], ["department"], (20, 60), pool="work"),
        T("assignment", ["position:role", "duration=1-60"], ["employee", "project"], (80, 200)),
    ],
    "restaurant": [
        T("restaurant", ["name", "city", "category:cuisine", "rating", "open_date"], rows=(15, 40),
          pool="restaurant"),
        T("chef", ["name", "age", "salary", "country", "hire_date"], ["restaurant"], (30, 90),
          optional=True),
        T("dish", ["name", "category:dish_category", "price", "rating"], ["restaurant"], (60, 200), pool="dish"),
        T("review", ["name", "rating", "score", "date"], ["dish"], (80, 200)),
    ],
    "museum": [
        T("museum", ["name", "city", "country", "open_year", "capacity"], rows=(10, 30), pool="museum",
          optional=True),
        T("exhibition", ["title", "subject:theme", "price", "start_date"], ["museum"], (30, 90), pool="work"),
        T("visitor", ["name", "age", "gender", "city", "country"], rows=(60, 200)),
        T("visit", ["category:ticket_type", "rating", "date"], ["visitor", "exhibition"], (100, 200)),
    ],
    "hotel": [
        T("hotel", ["name", "city", "rating", "open_date"], rows=(10, 30), pool="hotel", optional=True),
        T("room", ["category:room_type", "price", "capacity=1-6", "size=10-120"], ["hotel"], (40, 150)),
        T("guest", ["name", "age", "country", "city"], rows=(60, 200)),
        T("stay", ["payment_method", "duration=1-14", "price", "start_date"], ["guest", "room"], (100, 200)),
    ],
    "cinema": [
        T("cinema", ["name", "city", "capacity", "open_year"], rows=(8, 25), pool="cinema"),
        T("movie", ["title", "genre:movie_genre", "language", "year", "rating", "budget", "duration=80-180"],
          rows=(30, 100), pool="work"),
        T("actor", ["name", "age", "gender", "country", "birth_date"], ["movie"], (60, 200), optional=True),
        T("screening", ["language", "price", "attendance", "date"], ["movie", "cinema"], (100, 200)),
    ],
}


def _split_col(spec: str) -> tuple[str, str | None]:
    """"col" -> (col, None); "col:pool" -> (col, pool); "col=lo-hi" -> (col, "lo-hi")."""
    for sep in (":", "="):
        if sep in spec:
            col, extra = spec.split(sep, 1)
            return col, extra
    return spec, None


# ----------------------------------------------------------------------------------------
# Naming variation. Variant 1 of a domain uses the base names above; later variants rename
# tables and columns from per-concept synonym pools (rotating, so variants 2, 3, 4 of a domain
# get different words), sometimes with a generic prefix/suffix. Questions are worded from the
# renamed schema and foreign keys follow the renamed parent (`<parent>_id`), so copying from
# question and schema still works while table names cannot be memorized per domain.
# Words are plain identifiers (no SQL keywords) whose plural() reads naturally.
# ----------------------------------------------------------------------------------------
TABLE_SYNONYMS: dict[str, list[str]] = {
    "school": ["academy", "college", "institute"],
    "teacher": ["instructor", "tutor", "educator", "lecturer"],
    "student": ["pupil", "learner", "trainee"],
    "course": ["lesson", "module", "seminar"],
    "store": ["shop", "outlet", "branch"],
    "customer": ["client", "shopper", "buyer"],
    "product": ["item", "article", "ware"],
    "purchase": ["sale", "receipt", "checkout"],
    "hospital": ["clinic", "infirmary", "medical_center"],
    "doctor": ["physician", "medic", "surgeon"],
    "patient": ["inpatient", "outpatient", "care_recipient"],
    "appointment": ["meeting", "session", "slot"],
    "airline": ["carrier", "air_company", "operator"],
    "flight": ["route", "trip", "journey"],
    "passenger": ["traveler", "flyer", "rider"],
    "booking": ["reservation", "ticket", "flight_booking"],
    "library": ["archive", "reading_room", "media_center"],
    "author": ["writer", "novelist", "poet"],
    "book": ["novel", "volume", "publication"],
    "member": ["reader", "borrower", "patron"],
    "loan": ["borrowing", "lending", "rental"],
    "artist": ["musician", "performer", "singer"],
    "album": ["record", "disc", "collection"],
    "song": ["track", "tune", "piece"],
    "concert": ["gig", "show", "performance"],
    "team": ["club", "squad", "franchise"],
    "player": ["athlete", "competitor", "team_member"],
    "coach": ["trainer", "mentor", "manager"],
    "game": ["fixture", "contest", "matchup"],
    "department": ["division", "unit", "section"],
    "employee": ["staff_member", "worker", "associate"],
    "project": ["initiative", "program", "venture"],
    "assignment": ["allocation", "task", "posting"],
    "restaurant": ["eatery", "diner", "bistro"],
    "chef": ["cook", "head_cook", "culinarian"],
    "dish": ["meal", "menu_item", "plate"],
    "review": ["critique", "evaluation", "comment"],
    "museum": ["gallery", "exhibit_hall", "heritage_site"],
    "exhibition": ["exhibit", "display", "showcase"],
    "visitor": ["attendee", "tourist", "sightseer"],
    "visit": ["admission", "tour", "ticket_sale"],
    "hotel": ["inn", "lodge", "resort"],
    "room": ["chamber", "suite", "lodging"],
    "guest": ["lodger", "resident", "occupant"],
    "stay": ["sojourn", "residence", "occupancy"],
    "cinema": ["theater", "movie_house", "multiplex"],
    "movie": ["film", "picture", "feature"],
    "actor": ["star", "cast_member", "actress"],
    "screening": ["showing", "showtime", "projection"],
}
TABLE_PREFIXES = ["local", "regional", "registered"]
TABLE_SUFFIXES = ["record", "entry"]
COLUMN_SYNONYMS: dict[str, list[str]] = {
    "name": ["full_name", "person_name", "label"], "title": ["name", "label", "heading"],
    "name@thing": ["label", "title", "display_name"],  # `name` of a table whose rows are not people
    "city": ["town", "location", "home_city"], "country": ["nation", "home_country", "country_name"],
    "origin": ["departure_city", "from_city", "source_city"],
    "destination": ["arrival_city", "to_city", "target_city"],
    "age": ["years_old", "current_age", "age_years"],
    "salary": ["pay", "wage", "income", "annual_salary"],
    "price": ["cost", "fee", "charge", "amount"],
    "year": ["release_year", "year_made", "year_of_release"],
    "founded_year": ["year_founded", "founding_year", "establishment_year"],
    "open_year": ["opening_year", "year_opened", "inauguration_year"],
    "capacity": ["max_capacity", "seat_count", "places"],
    "size": ["area", "floor_area", "surface"],
    "quantity": ["units", "volume", "number_of_units"],
    "distance": ["mileage", "trip_length", "kilometers"],
    "duration": ["period", "time_span", "term"],
    "rating": ["stars", "star_rating", "user_rating"],
    "sales": ["revenue", "turnover", "units_sold"],
    "attendance": ["audience", "crowd", "spectators", "turnout"],
    "budget": ["funding", "spending", "budget_amount"],
    "height": ["stature", "height_cm", "body_height"],
    "score": ["points", "grade", "mark"],
    "subject": ["discipline", "field", "topic"],
    "position": ["role", "post", "duty"],
    "gender": ["sex", "gender_identity"],
    "status": ["state", "stage", "progress"],
    "payment_method": ["payment_type", "pay_method", "payment_mode"],
    "language": ["spoken_language", "audio_language", "original_language"],
    "category": ["kind", "type_name", "classification"],
    "genre": ["style", "genre_name", "form"],
    "date": ["{table}_date", "event_date", "record_date"],
    "birth_date": ["date_of_birth", "birthday", "born_date"],
    "hire_date": ["hiring_date", "employment_date", "joined_date"],
    "start_date": ["begin_date", "commencement_date", "first_date"],
    "open_date": ["opening_date", "inauguration_date", "launch_date"],
    "join_date": ["signup_date", "registration_date", "enrollment_date"],
    "release_date": ["publish_date", "issue_date", "premiere_date"],
}


def _rotate(pool: list[str], seed: int, key: str, variant: int) -> str:
    """The synonym for `variant` (>= 2): a seed-dependent start, then one step per variant, so
    successive variants of a domain use different words until the pool wraps around."""
    start = random.Random(f"vantage-synthetic:{seed}:syn:{key}").randrange(len(pool))
    return pool[(start + variant - 2) % len(pool)]


def _naming(domain: str, variant: int, seed: int, name_variation: float,
            design: list[tuple[TableDef, list[str], list[str]]]) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    """(table base name -> surface name, (table base name, column base name) -> surface name)."""
    tmap: dict[str, str] = {t.name: t.name for t, _, _ in design}
    cmap: dict[tuple[str, str], str] = {}
    rename = variant >= 2 and name_variation > 0
    rng = random.Random(f"vantage-synthetic:{seed}:names:{domain}_{variant}")
    if rename:
        taken: set[str] = set()
        for t, _, _ in design:
            new = t.name
            if t.name in TABLE_SYNONYMS and rng.random() < name_variation:
                new = _rotate(TABLE_SYNONYMS[t.name], seed, f"{domain}:{t.name}", variant)
            if rng.random() < 0.2 * name_variation:  # generic prefix/suffix variation
                if rng.random() < 0.6:
                    new = f"{rng.choice(TABLE_PREFIXES)}_{new}"
                else:
                    new = f"{new}_{rng.choice(TABLE_SUFFIXES)}"
            if new in taken or (new != t.name and new in tmap):  # clash: keep the base name
                new = t.name
            tmap[t.name] = new
            taken.add(new)
    for t, specs, _ in design:
        used = {"id"}
        for spec in specs:
            col = _split_col(spec)[0]
            new = col
            key = "name@thing" if col == "name" and t.pool != "person" else col
            if rename and key in COLUMN_SYNONYMS and rng.random() < name_variation:
                new = _rotate(COLUMN_SYNONYMS[key], seed, f"{domain}:{t.name}:{col}", variant)
                new = new.format(table=tmap[t.name])
            if new in used or new.endswith("_id") or any(new == _split_col(x)[0] for x in specs if x != spec):
                new = col  # clash with another column of the table: keep the base name
            used.add(new)
            cmap[(t.name, col)] = new
    return tmap, cmap


# ----------------------------------------------------------------------------------------
# Built database (in memory: schema + rows)
# ----------------------------------------------------------------------------------------
@dataclass
class Tbl:
    name: str
    cols: list[tuple[str, str, str | None]]  # (column, kind text|number|time|key, pool)
    parents: list[str]
    rows: list[tuple] = field(default_factory=list)
    disp: str = ""                           # display column (the base design's name/title)

    def names(self) -> list[str]:
        return [c[0] for c in self.cols]

    def of_kind(self, kind: str) -> list[str]:
        return [c for c, k, _ in self.cols if k == kind]

    def categorical(self) -> list[str]:
        return [c for c, k, p in self.cols if k == "text" and len(POOLS[p]) <= CATEGORICAL_MAX]

    def display(self) -> str:
        return self.disp or self.of_kind("text")[0]

    def values(self, col: str) -> list:
        i = self.names().index(col)
        return [r[i] for r in self.rows if r[i] is not None]


@dataclass
class Db:
    db_id: str
    domain: str
    tables: list[Tbl]

    def table(self, name: str) -> Tbl:
        return next(t for t in self.tables if t.name == name)

    def edges(self) -> list[tuple[str, str]]:
        """(child, parent) for each foreign key child.<parent>_id -> parent.id."""
        return [(t.name, p) for t in self.tables for p in t.parents]


def _design(domain: str, variant: int, rng: random.Random) -> list[tuple[TableDef, list[str], list[str]]]:
    """Pick tables/columns for a variant: (tabledef, column specs, parents)."""
    tdefs = DOMAINS[domain]
    keep = list(tdefs)
    if variant % 2 == 0:  # even variants drop the optional table
        keep = [t for t in keep if not t.optional]
    names = {t.name for t in keep}
    out = []
    for t in keep:
        cols = list(t.cols)
        if variant >= 2:
            disp = "name" if "name" in cols else ("title" if "title" in cols else None)
            droppable = [c for c in cols if _split_col(c)[0] != disp]
            for c in droppable:
                kind = _col_kind(_split_col(c)[0])
                same = [x for x in cols if _col_kind(_split_col(x)[0]) == kind]
                if kind == "time":
                    continue  # keep dates so every variant has a date column
                if kind == "text" and disp is None and len(same) <= 1:
                    continue
                if len(same) > 1 and rng.random() < 0.3:
                    cols.remove(c)
        out.append((t, cols, [p for p in t.parents if p in names]))
    return out


def _gen_value(rng: random.Random, col: str, kind: str, pool: str | None):
    if kind == "text":
        return rng.choice(POOLS[pool])
    if kind == "number":
        if pool:  # "lo-hi" override
            lo, hi = (int(v) for v in pool.split("-"))
            return rng.randint(lo, hi)
        lo, hi, step = NUM_COLS[col]
        return rng.randrange(lo, hi + 1, step) if step > 1 else rng.randint(lo, hi)
    lo, hi = DATE_RANGES.get(col, DEFAULT_DATES)
    return (lo + timedelta(days=rng.randint(0, (hi - lo).days))).isoformat()


def _build_db(db_id: str, domain: str, variant: int, rng: random.Random, *, seed: int = 0,
              name_variation: float = 1.0) -> Db:
    design = _design(domain, variant, rng)
    tmap, cmap = _naming(domain, variant, seed, name_variation, design)
    tables: list[Tbl] = []
    for tdef, specs, base_parents in design:
        parents = [tmap[p] for p in base_parents]
        cols: list[tuple[str, str, str | None]] = [("id", "key", None)]
        base: list[str] = ["id"]  # base column names, for value generation
        texts = []
        for spec in specs:
            col, pool = _split_col(spec)
            kind = _col_kind(col)
            if kind == "text":
                texts.append(col)
                if pool is None:
                    pool = tdef.pool if col in ("name", "title") else TEXT_COLS[col]
            cols.append((cmap[(tdef.name, col)], kind, pool))
            base.append(col)
        for p in parents:
            cols.append((f"{p}_id", "key", p))
            base.append(f"{p}_id")
        disp = next((c for c in ("name", "title") if c in texts), texts[0] if texts else "")
        tables.append(Tbl(tmap[tdef.name], cols, parents, disp=cmap.get((tdef.name, disp), "")))
        n = rng.randint(*tdef.rows)
        # Each child references a random ~85% of its parent's rows, so NOT IN finds some.
        used = {}
        for p in parents:
            ids = [r[0] for r in next(t for t in tables if t.name == p).rows]
            k = max(1, int(len(ids) * 0.85))
            used[p] = sorted(rng.sample(ids, k)) if len(ids) > 2 else ids
        for i in range(1, n + 1):
            row = []
            for (col, kind, pool), bcol in zip(cols, base):
                if col == "id":
                    row.append(i)
                elif kind == "key":
                    row.append(rng.choice(used[pool]))
                else:
                    row.append(_gen_value(rng, bcol, kind, pool))
            tables[-1].rows.append(tuple(row))
    return Db(db_id, domain, tables)


def _sql_type(kind: str, col: str) -> str:
    return "INTEGER" if kind in ("key", "number") else "TEXT"


def _write_sqlite(db: Db, path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    for t in db.tables:
        defs = []
        for col, kind, _ in t.cols:
            defs.append(f'"{col}" {_sql_type(kind, col)}' + (" PRIMARY KEY" if col == "id" else ""))
        for p in t.parents:
            defs.append(f'FOREIGN KEY ("{p}_id") REFERENCES "{p}"("id")')
        con.execute(f'CREATE TABLE "{t.name}" (' + ", ".join(defs) + ")")
        ph = ", ".join("?" * len(t.cols))
        con.executemany(f'INSERT INTO "{t.name}" VALUES ({ph})', t.rows)
    con.commit()
    return con


def _tables_entry(db: Db) -> dict:
    cols, cols_orig, types, pks = [[-1, "*"]], [[-1, "*"]], ["text"], []
    index: dict[tuple[str, str], int] = {}
    for ti, t in enumerate(db.tables):
        for col, kind, _ in t.cols:
            index[(t.name, col)] = len(cols)
            if col == "id":
                pks.append(len(cols))
            cols.append([ti, col.replace("_", " ")])
            cols_orig.append([ti, col])
            types.append("number" if kind in ("key", "number") else kind)
    fks = [[index[(c, f"{p}_id")], index[(p, "id")]] for c, p in db.edges()]
    return {
        "db_id": db.db_id,
        "table_names": [t.name.replace("_", " ") for t in db.tables],
        "table_names_original": [t.name for t in db.tables],
        "column_names": cols, "column_names_original": cols_orig, "column_types": types,
        "primary_keys": pks, "foreign_keys": fks,
    }


# ----------------------------------------------------------------------------------------
# Question templates
# ----------------------------------------------------------------------------------------
def nat(name: str) -> str:
    return name.replace("_", " ")


def plural(name: str) -> str:
    return pluralize(nat(name))


def lit(v) -> str:
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    return str(v)


def qv(v) -> str:
    """A value as the question writes it."""
    return str(v)


class Skip(Exception):
    """The template does not apply to the chosen table(s)."""


def _pick(rng, items):
    if not items:
        raise Skip
    return rng.choice(items)


def _threshold(rng, vals: list, lo: float, hi: float):
    if not vals:
        raise Skip
    s = sorted(vals)
    return s[min(len(s) - 1, int(len(s) * rng.uniform(lo, hi)))]


_AN = re.compile(r"(\b[Aa]) ([aeiou])")
AGG = [("avg", "average"), ("sum", "total"), ("min", "minimum"), ("max", "maximum")]


class Ctx:
    """What a template gets: the database, the RNG, and helpers that pick from both."""

    def __init__(self, db: Db, rng: random.Random):
        self.db, self.rng = db, rng

    def table(self, need=("number",)) -> Tbl:
        ok = [t for t in self.db.tables if all(self._has(t, k) for k in need)]
        return _pick(self.rng, ok)

    @staticmethod
    def _has(t: Tbl, k: str) -> bool:
        if k == "cat":
            return bool(t.categorical())
        if k == "text":
            return bool(t.of_kind("text"))
        return bool(t.of_kind(k))

    def col(self, t: Tbl, kind: str) -> str:
        return _pick(self.rng, t.categorical() if kind == "cat" else t.of_kind(kind))

    def say(self, phrasings: list[str], **kw) -> str:
        return _AN.sub(r"\1n \2", self.rng.choice(phrasings).format(**kw))

    def other(self, t: Tbl, avoid: str) -> str:
        """The display column, or another column when the display column is `avoid`."""
        d = t.display()
        if d != avoid:
            return d
        return _pick(self.rng, [c for c in t.of_kind("text") + t.of_kind("number") if c != avoid])

    def cond(self, t: Tbl, alias: str = "") -> tuple[str, str]:
        """A random filter on t: (sql, words), values drawn from the rows."""
        a = f"{alias}." if alias else ""
        kinds = [k for k in ("cat", "number") if self._has(t, k)]
        kind = _pick(self.rng, kinds)
        c = self.col(t, kind)
        if kind == "cat":
            v = _pick(self.rng, t.values(c))
            return f"{a}{c} = {lit(v)}", f"{nat(c)} {qv(v)}"
        if self.rng.random() < 0.5:
            v = _threshold(self.rng, t.values(c), 0.1, 0.7)
            return f"{a}{c} > {lit(v)}", f"{nat(c)} above {qv(v)}"
        v = _threshold(self.rng, t.values(c), 0.3, 0.9)
        return f"{a}{c} < {lit(v)}", f"{nat(c)} below {qv(v)}"

    def edge(self) -> tuple[Tbl, Tbl]:
        c, p = _pick(self.rng, self.db.edges())
        return self.db.table(c), self.db.table(p)

    def path3(self) -> tuple[Tbl, Tbl, Tbl]:
        """Three distinct tables a - b - c linked by foreign keys (either direction)."""
        adj: dict[str, list[str]] = {}
        for c, p in self.db.edges():
            adj.setdefault(c, []).append(p)
            adj.setdefault(p, []).append(c)
        paths = [(a, b, c) for a in sorted(adj) for b in adj[a] for c in adj[b] if c != a]
        a, b, c = _pick(self.rng, paths)
        return self.db.table(a), self.db.table(b), self.db.table(c)


def _child_join(ch: Tbl, pa: Tbl) -> str:
    return f"{ch.name} AS T1 JOIN {pa.name} AS T2 ON T1.{pa.name}_id = T2.id"


def _on(x: Tbl, xa: str, y: Tbl, ya: str) -> str:
    if y.name in x.parents:
        return f"{xa}.{y.name}_id = {ya}.id"
    return f"{xa}.id = {ya}.{x.name}_id"


TEMPLATES: dict[str, tuple[str, callable]] = {}


def template(name: str, category: str):
    def deco(fn):
        TEMPLATES[name] = (category, fn)
        return fn
    return deco


# --- filters ------------------------------------------------------------------------------
@template("filter_eq", "filter")
def _t(x: Ctx):
    t = x.table(("cat",))
    c = x.col(t, "cat")
    d = x.other(t, c)
    v = _pick(x.rng, t.values(c))
    q = x.say(["What is the {d} of the {p} whose {c} is {v}?", "List the {d} of all {p} with {c} {v}.",
               "Show the {d} of each {s} whose {c} is {v}.", "Which {p} have {c} {v}? Give their {d}."],
              d=nat(d), p=plural(t.name), s=nat(t.name), c=nat(c), v=qv(v))
    return q, f"SELECT {d} FROM {t.name} WHERE {c} = {lit(v)}"


@template("filter_gt", "filter")
def _t(x: Ctx):
    t = x.table(("number", "text"))
    n, d = x.col(t, "number"), t.display()
    v = _threshold(x.rng, t.values(n), 0.1, 0.8)
    q = x.say(["Show the {d} of {p} whose {n} is greater than {v}.",
               "Which {p} have a {n} above {v}? List their {d}.",
               "List the {d} of every {s} with {n} more than {v}."],
              d=nat(d), p=plural(t.name), s=nat(t.name), n=nat(n), v=qv(v))
    return q, f"SELECT {d} FROM {t.name} WHERE {n} > {lit(v)}"


@template("filter_lt", "filter")
def _t(x: Ctx):
    t = x.table(("number", "text"))
    n, d = x.col(t, "number"), t.display()
    v = _threshold(x.rng, t.values(n), 0.2, 0.9)
    q = x.say(["Show the {d} and {n} of {p} whose {n} is less than {v}.",
               "List the {d} and {n} of every {s} with {n} below {v}.",
               "For {p} with {n} under {v}, give the {d} and {n}."],
              d=nat(d), p=plural(t.name), s=nat(t.name), n=nat(n), v=qv(v))
    return q, f"SELECT {d}, {n} FROM {t.name} WHERE {n} < {lit(v)}"


@template("filter_like", "filter")
def _t(x: Ctx):
    t = x.table(("text",))
    c, d = x.col(t, "text"), t.display()
    word = _pick(x.rng, _pick(x.rng, t.values(c)).split())
    if len(word) < 3:
        raise Skip
    k = x.rng.randint(3, min(5, len(word)))
    i = x.rng.randint(0, len(word) - k)
    sub = word[i:i + k]
    q = x.say(["Which {p} have a {c} containing '{v}'? Show their {d}.",
               "List the {d} of {p} whose {c} contains '{v}'.",
               "Find the {d} of every {s} with '{v}' in its {c}."],
              d=nat(d), p=plural(t.name), s=nat(t.name), c=nat(c), v=sub)
    return q, f"SELECT {d} FROM {t.name} WHERE {c} LIKE '%{sub}%'"


@template("filter_between", "filter")
def _t(x: Ctx):
    t = x.table(("number", "text"))
    n, d = x.col(t, "number"), t.display()
    a = _threshold(x.rng, t.values(n), 0.05, 0.5)
    b = _threshold(x.rng, t.values(n), 0.5, 0.95)
    q = x.say(["Show the {d} of {p} with {n} between {a} and {b}.",
               "Which {p} have a {n} between {a} and {b}? List their {d}.",
               "List the {d} of each {s} whose {n} is between {a} and {b}."],
              d=nat(d), p=plural(t.name), s=nat(t.name), n=nat(n), a=qv(a), b=qv(b))
    return q, f"SELECT {d} FROM {t.name} WHERE {n} BETWEEN {lit(a)} AND {lit(b)}"


@template("filter_date", "filter")
def _t(x: Ctx):
    t = x.table(("time", "text"))
    c, d = x.col(t, "time"), t.display()
    if x.rng.random() < 0.5:
        v, op, w, w2 = _threshold(x.rng, t.values(c), 0.1, 0.8), ">", "after", "later than"
    else:
        v, op, w, w2 = _threshold(x.rng, t.values(c), 0.2, 0.9), "<", "before", "earlier than"
    q = x.say(["List the {d} of {p} with {c} {w} {v}.", "Which {p} have a {c} {w2} {v}? Show their {d}.",
               "Show the {d} of every {s} whose {c} is {w} {v}."],
              d=nat(d), p=plural(t.name), s=nat(t.name), c=nat(c), v=v, w=w, w2=w2)
    return q, f"SELECT {d} FROM {t.name} WHERE {c} {op} {lit(v)}"


@template("filter_and", "filter")
def _t(x: Ctx):
    t = x.table(("cat", "number"))
    c, n = x.col(t, "cat"), x.col(t, "number")
    d = x.other(t, c)
    row = _pick(x.rng, t.rows)
    v = row[t.names().index(c)]
    m = _threshold(x.rng, t.values(n), 0.05, 0.5)
    q = x.say(["Show the {d} of {p} whose {c} is {v} and whose {n} is greater than {m}.",
               "Which {p} with {c} {v} have a {n} above {m}? Give their {d}.",
               "List the {d} of every {s} with {c} {v} and {n} more than {m}."],
              d=nat(d), p=plural(t.name), s=nat(t.name), c=nat(c), v=qv(v), n=nat(n), m=qv(m))
    return q, f"SELECT {d} FROM {t.name} WHERE {c} = {lit(v)} AND {n} > {lit(m)}"


@template("filter_or", "filter")
def _t(x: Ctx):
    t = x.table(("cat",))
    c = x.col(t, "cat")
    d = x.other(t, c)
    vals = sorted(set(t.values(c)))
    if len(vals) < 2:
        raise Skip
    a, b = x.rng.sample(vals, 2)
    q = x.say(["Show the {d} of {p} whose {c} is {a} or {b}.",
               "List the {d} of every {s} with {c} {a} or {c} {b}.",
               "Which {p} have {c} {a} or {b}? Give their {d}."],
              d=nat(d), p=plural(t.name), s=nat(t.name), c=nat(c), a=qv(a), b=qv(b))
    return q, f"SELECT {d} FROM {t.name} WHERE {c} = {lit(a)} OR {c} = {lit(b)}"


# --- aggregates ---------------------------------------------------------------------------
@template("count_all", "aggregate")
def _t(x: Ctx):
    t = x.table(())
    q = x.say(["How many {p} are there?", "Count the number of {p}.", "What is the total number of {p}?"],
              p=plural(t.name))
    return q, f"SELECT count(*) FROM {t.name}"


@template("count_where", "aggregate")
def _t(x: Ctx):
    t = x.table(("cat",))
    c = x.col(t, "cat")
    v = _pick(x.rng, t.values(c))
    q = x.say(["How many {p} have {c} {v}?", "Count the {p} whose {c} is {v}.",
               "What is the number of {p} with {c} {v}?"], p=plural(t.name), c=nat(c), v=qv(v))
    return q, f"SELECT count(*) FROM {t.name} WHERE {c} = {lit(v)}"


@template("count_gt", "aggregate")
def _t(x: Ctx):
    t = x.table(("number",))
    n = x.col(t, "number")
    v = _threshold(x.rng, t.values(n), 0.1, 0.8)
    q = x.say(["How many {p} have a {n} greater than {v}?", "Count the {p} with {n} above {v}.",
               "What is the number of {p} whose {n} is more than {v}?"], p=plural(t.name), n=nat(n), v=qv(v))
    return q, f"SELECT count(*) FROM {t.name} WHERE {n} > {lit(v)}"


@template("agg", "aggregate")
def _t(x: Ctx):
    t = x.table(("number",))
    n = x.col(t, "number")
    f, fw = _pick(x.rng, AGG)
    q = x.say(["What is the {fw} {n} of all {p}?", "Find the {fw} {n} across {p}.", "Give the {fw} {n} of {p}."],
              fw=fw, n=nat(n), p=plural(t.name))
    return q, f"SELECT {f}({n}) FROM {t.name}"


@template("agg_where", "aggregate")
def _t(x: Ctx):
    t = x.table(("number", "cat"))
    n, c = x.col(t, "number"), x.col(t, "cat")
    v = _pick(x.rng, t.values(c))
    f, fw = _pick(x.rng, AGG)
    q = x.say(["What is the {fw} {n} of {p} whose {c} is {v}?", "Find the {fw} {n} for {p} with {c} {v}.",
               "For {p} with {c} {v}, what is the {fw} {n}?"],
              fw=fw, n=nat(n), p=plural(t.name), c=nat(c), v=qv(v))
    return q, f"SELECT {f}({n}) FROM {t.name} WHERE {c} = {lit(v)}"


@template("agg_minmax", "aggregate")
def _t(x: Ctx):
    t = x.table(("number",))
    n = x.col(t, "number")
    q = x.say(["What are the maximum and minimum {n} of all {p}?", "Show the largest and smallest {n} among {p}.",
               "Give the maximum and the minimum {n} of {p}."], n=nat(n), p=plural(t.name))
    return q, f"SELECT max({n}), min({n}) FROM {t.name}"


@template("count_distinct", "aggregate")
def _t(x: Ctx):
    t = x.table(("cat",))
    c = x.col(t, "cat")
    q = x.say(["How many different {c} values are there among {p}?", "Count the number of distinct {c} of {p}.",
               "How many distinct {c} do the {p} have?"], c=nat(c), p=plural(t.name))
    return q, f"SELECT count(DISTINCT {c}) FROM {t.name}"


@template("distinct", "filter")
def _t(x: Ctx):
    t = x.table(("cat", "number"))
    c, n = x.col(t, "cat"), x.col(t, "number")
    v = _threshold(x.rng, t.values(n), 0.1, 0.8)
    q = x.say(["List the distinct {c} of {p} with {n} above {v}.",
               "What are the different {c} values of {p} whose {n} is greater than {v}?",
               "Show each distinct {c} among {p} with {n} more than {v}."],
              c=nat(c), p=plural(t.name), n=nat(n), v=qv(v))
    return q, f"SELECT DISTINCT {c} FROM {t.name} WHERE {n} > {lit(v)}"


# --- grouping -----------------------------------------------------------------------------
@template("group_count", "group")
def _t(x: Ctx):
    t = x.table(("cat",))
    c = x.col(t, "cat")
    q = x.say(["How many {p} are there for each {c}?", "Show each {c} and the number of {p} with it.",
               "Count the {p} in each {c}.", "For each {c}, give the number of {p}."], c=nat(c), p=plural(t.name))
    return q, f"SELECT {c}, count(*) FROM {t.name} GROUP BY {c}"


@template("group_agg", "group")
def _t(x: Ctx):
    t = x.table(("cat", "number"))
    c, n = x.col(t, "cat"), x.col(t, "number")
    f, fw = _pick(x.rng, AGG)
    q = x.say(["What is the {fw} {n} of {p} for each {c}?", "For each {c}, show the {fw} {n} of {p}.",
               "Show each {c} together with the {fw} {n} of its {p}."],
              fw=fw, n=nat(n), p=plural(t.name), c=nat(c))
    return q, f"SELECT {c}, {f}({n}) FROM {t.name} GROUP BY {c}"


@template("group_having", "group")
def _t(x: Ctx):
    t = x.table(("cat",))
    c = x.col(t, "cat")
    vals = t.values(c)
    counts = sorted({vals.count(v) for v in set(vals)})
    k = _pick(x.rng, [n for n in counts if n >= 2] or counts)
    q = x.say(["Which {c} values have at least {k} {p}?", "List the {c} that appear in {k} or more {p}.",
               "Show every {c} shared by at least {k} {p}."], c=nat(c), k=k, p=plural(t.name))
    return q, f"SELECT {c} FROM {t.name} GROUP BY {c} HAVING count(*) >= {k}"


@template("group_having_avg", "group")
def _t(x: Ctx):
    t = x.table(("cat", "number"))
    c, n = x.col(t, "cat"), x.col(t, "number")
    v = _threshold(x.rng, t.values(n), 0.2, 0.5)
    q = x.say(["Which {c} values have an average {n} above {v} among their {p}?",
               "List each {c} whose {p} have an average {n} greater than {v}.",
               "Show the {c} for which the average {n} of {p} is more than {v}."],
              c=nat(c), n=nat(n), v=qv(v), p=plural(t.name))
    return q, f"SELECT {c} FROM {t.name} GROUP BY {c} HAVING avg({n}) > {lit(v)}"


@template("group_most", "group")
def _t(x: Ctx):
    t = x.table(("cat",))
    c = x.col(t, "cat")
    q = x.say(["Which {c} is the most common among {p}?", "What {c} has the largest number of {p}?",
               "Find the {c} shared by the most {p}."], c=nat(c), p=plural(t.name))
    return q, f"SELECT {c} FROM {t.name} GROUP BY {c} ORDER BY count(*) DESC LIMIT 1"


# --- ordering -----------------------------------------------------------------------------
@template("order_limit", "order")
def _t(x: Ctx):
    t = x.table(("number", "text"))
    n, d = x.col(t, "number"), t.display()
    k = x.rng.randint(2, 5)
    desc = x.rng.random() < 0.6
    w = x.rng.choice(["highest", "largest"] if desc else ["lowest", "smallest"])
    q = x.say(["List the {d} of the {k} {p} with the {w} {n}.", "Show the {d} of the {k} {p} that have the {w} {n}.",
               "What are the {d} of the {k} {p} with the {w} {n}?"],
              d=nat(d), k=k, p=plural(t.name), w=w, n=nat(n))
    return q, f"SELECT {d} FROM {t.name} ORDER BY {n} {'DESC' if desc else 'ASC'} LIMIT {k}"


@template("order_all", "order")
def _t(x: Ctx):
    t = x.table(("number", "text"))
    n, d = x.col(t, "number"), t.display()
    desc = x.rng.random() < 0.5
    q = x.say(["List the {d} and {n} of all {p}, ordered by {n} {o}.",
               "Show the {d} and {n} of every {s} sorted by {n} in {o} order.",
               "Give the {d} and {n} of {p} from {r} {n}."],
              d=nat(d), n=nat(n), p=plural(t.name), s=nat(t.name), o="descending" if desc else "ascending",
              r="highest to lowest" if desc else "lowest to highest")
    return q, f"SELECT {d}, {n} FROM {t.name} ORDER BY {n} {'DESC' if desc else 'ASC'}"


@template("argmax", "order")
def _t(x: Ctx):
    t = x.table(("number", "text"))
    n, d = x.col(t, "number"), t.display()
    desc = x.rng.random() < 0.5
    w = ["highest", "largest", "maximum"] if desc else ["lowest", "smallest", "minimum"]
    q = x.say(["What is the {d} of the {s} with the {w0} {n}?", "Which {s} has the {w1} {n}? Give its {d}.",
               "Find the {d} of the {s} with the {w2} {n}."],
              d=nat(d), s=nat(t.name), n=nat(n), w0=w[0], w1=w[1], w2=w[2])
    return q, f"SELECT {d} FROM {t.name} ORDER BY {n} {'DESC' if desc else 'ASC'} LIMIT 1"


# --- joins --------------------------------------------------------------------------------
@template("join_filter", "join")
def _t(x: Ctx):
    ch, pa = x.edge()
    d = ch.display()
    cond, words = x.cond(pa, "T2")
    q = x.say(["Show the {d} of {cp} whose {ps} has {w}.", "List the {d} of every {cs} belonging to a {ps} with {w}.",
               "Which {cp} are linked to a {ps} with {w}? Give their {d}."],
              d=nat(d), cp=plural(ch.name), cs=nat(ch.name), ps=nat(pa.name), w=words)
    return q, f"SELECT T1.{d} FROM {_child_join(ch, pa)} WHERE {cond}"


@template("join_child_cols", "join")
def _t(x: Ctx):
    ch, pa = x.edge()
    d, pd = ch.display(), pa.display()
    cond, words = x.cond(ch, "T1")
    q = x.say(["Show the {d} of each {cs} with {w} along with the {pd} of its {ps}.",
               "For every {cs} with {w}, list its {d} and the {pd} of its {ps}.",
               "List the {d} of {cp} with {w} and the {pd} of their {ps}."],
              d=nat(d), pd=nat(pd), cs=nat(ch.name), cp=plural(ch.name), ps=nat(pa.name), w=words)
    return q, f"SELECT T1.{d}, T2.{pd} FROM {_child_join(ch, pa)} WHERE {cond}"


@template("join_group_count", "join")
def _t(x: Ctx):
    ch, pa = x.edge()
    pd = pa.display()
    q = x.say(["For each {ps}, show its {pd} and the number of {cp}.",
               "How many {cp} does each {ps} have? List the {pd} and the count.",
               "Show the {pd} of every {ps} together with its number of {cp}."],
              ps=nat(pa.name), pd=nat(pd), cp=plural(ch.name))
    return q, f"SELECT T2.{pd}, count(*) FROM {_child_join(ch, pa)} GROUP BY T1.{pa.name}_id"


@template("join_most", "join")
def _t(x: Ctx):
    ch, pa = x.edge()
    pd = pa.display()
    q = x.say(["Which {ps} has the most {cp}? Give its {pd}.",
               "What is the {pd} of the {ps} with the largest number of {cp}?",
               "Find the {pd} of the {ps} that has the most {cp}."],
              ps=nat(pa.name), pd=nat(pd), cp=plural(ch.name))
    return q, f"SELECT T2.{pd} FROM {_child_join(ch, pa)} GROUP BY T1.{pa.name}_id ORDER BY count(*) DESC LIMIT 1"


@template("join_agg", "join")
def _t(x: Ctx):
    ch, pa = x.edge()
    if not ch.of_kind("number"):
        raise Skip
    n, pd = x.col(ch, "number"), pa.display()
    f, fw = _pick(x.rng, AGG)
    q = x.say(["For each {ps}, show its {pd} and the {fw} {n} of its {cp}.",
               "What is the {fw} {n} of {cp} for each {ps}? List the {pd} too.",
               "Show the {pd} of every {ps} and the {fw} {n} of its {cp}."],
              ps=nat(pa.name), pd=nat(pd), fw=fw, n=nat(n), cp=plural(ch.name))
    return q, f"SELECT T2.{pd}, {f}(T1.{n}) FROM {_child_join(ch, pa)} GROUP BY T1.{pa.name}_id"


@template("join_having", "join")
def _t(x: Ctx):
    ch, pa = x.edge()
    pd = pa.display()
    vals = ch.values(f"{pa.name}_id")
    counts = sorted({vals.count(v) for v in set(vals)})
    k = _pick(x.rng, [n for n in counts if n >= 2] or counts)
    q = x.say(["Which {pp} have at least {k} {cp}? Give their {pd}.", "List the {pd} of {pp} with {k} or more {cp}.",
               "Show the {pd} of every {ps} that has at least {k} {cp}."],
              pp=plural(pa.name), ps=nat(pa.name), k=k, cp=plural(ch.name), pd=nat(pd))
    return q, f"SELECT T2.{pd} FROM {_child_join(ch, pa)} GROUP BY T1.{pa.name}_id HAVING count(*) >= {k}"


@template("join3", "join3")
def _t(x: Ctx):
    a, b, c = x.path3()
    d = a.display()
    cond, words = x.cond(c, "T3")
    q = x.say(["Show the distinct {d} of {ap} linked through {bp} to a {cs} with {w}.",
               "Which {ap} are connected via {bp} to a {cs} with {w}? List their {d}.",
               "List the different {d} of {ap} whose {bp} lead to a {cs} with {w}."],
              d=nat(d), ap=plural(a.name), bp=plural(b.name), cs=nat(c.name), w=words)
    return q, (f"SELECT DISTINCT T1.{d} FROM {a.name} AS T1 JOIN {b.name} AS T2 ON {_on(a, 'T1', b, 'T2')} "
               f"JOIN {c.name} AS T3 ON {_on(b, 'T2', c, 'T3')} WHERE {cond}")


# --- nested -------------------------------------------------------------------------------
@template("nested_in", "nested")
def _t(x: Ctx):
    ch, pa = x.edge()
    pd = pa.display()
    cond, words = x.cond(ch)
    q = x.say(["Show the {pd} of {pp} that have some {cs} with {w}.",
               "List the {pd} of every {ps} with at least one {cs} with {w}.",
               "Which {pp} have a {cs} with {w}? Give the {pd}."],
              pd=nat(pd), pp=plural(pa.name), ps=nat(pa.name), cs=nat(ch.name), w=words)
    return q, f"SELECT {pd} FROM {pa.name} WHERE id IN (SELECT {pa.name}_id FROM {ch.name} WHERE {cond})"


@template("nested_not_in", "nested")
def _t(x: Ctx):
    ch, pa = x.edge()
    pd = pa.display()
    q = x.say(["Which {pp} have no {cp}? Give their {pd}.", "List the {pd} of {pp} without any {cs}.",
               "Show the {pd} of every {ps} that has no {cs}."],
              pd=nat(pd), pp=plural(pa.name), ps=nat(pa.name), cs=nat(ch.name), cp=plural(ch.name))
    return q, f"SELECT {pd} FROM {pa.name} WHERE id NOT IN (SELECT {pa.name}_id FROM {ch.name})"


@template("scalar_subquery", "nested")
def _t(x: Ctx):
    t = x.table(("number", "text"))
    n, d = x.col(t, "number"), t.display()
    above = x.rng.random() < 0.6
    w = ["above", "greater than", "higher than"] if above else ["below", "less than", "lower than"]
    q = x.say(["Which {p} have a {n} {w0} the average {n}? List their {d}.",
               "Show the {d} of {p} whose {n} is {w1} the average {n} of all {p}.",
               "List the {d} of every {s} with {n} {w2} the average."],
              p=plural(t.name), s=nat(t.name), n=nat(n), d=nat(d), w0=w[0], w1=w[1], w2=w[2])
    return q, f"SELECT {d} FROM {t.name} WHERE {n} {'>' if above else '<'} (SELECT avg({n}) FROM {t.name})"


# --- set operations -----------------------------------------------------------------------
@template("set_union", "setop")
def _t(x: Ctx):
    t = x.table(("cat", "number"))
    c, n = x.col(t, "cat"), x.col(t, "number")
    d = x.other(t, c)
    v = _pick(x.rng, t.values(c))
    m = _threshold(x.rng, t.values(n), 0.6, 0.9)
    q = x.say(["List the {d} of {p} with {c} {v}, together with the {d} of {p} with {n} above {m}.",
               "Show the {d} of {p} whose {c} is {v}, and also of {p} whose {n} is greater than {m}."],
              d=nat(d), p=plural(t.name), c=nat(c), v=qv(v), n=nat(n), m=qv(m))
    return q, (f"SELECT {d} FROM {t.name} WHERE {c} = {lit(v)} UNION "
               f"SELECT {d} FROM {t.name} WHERE {n} > {lit(m)}")


@template("set_intersect", "setop")
def _t(x: Ctx):
    t = x.table(("cat", "number"))
    c, n = x.col(t, "cat"), x.col(t, "number")
    hi = _threshold(x.rng, t.values(n), 0.5, 0.8)
    lo = _threshold(x.rng, t.values(n), 0.2, 0.5)
    q = x.say(["Which {c} values have both {p} with {n} above {hi} and {p} with {n} below {lo}?",
               "Show the {c} shared by {p} with {n} greater than {hi} and {p} with {n} less than {lo}."],
              c=nat(c), p=plural(t.name), n=nat(n), hi=qv(hi), lo=qv(lo))
    return q, (f"SELECT {c} FROM {t.name} WHERE {n} > {lit(hi)} INTERSECT "
               f"SELECT {c} FROM {t.name} WHERE {n} < {lit(lo)}")


@template("set_except", "setop")
def _t(x: Ctx):
    t = x.table(("cat", "number"))
    c, n = x.col(t, "cat"), x.col(t, "number")
    v = _threshold(x.rng, t.values(n), 0.8, 0.97)
    q = x.say(["Which {c} values have no {p} with {n} above {v}?",
               "List every {c} of {p} except the {c} of {p} with {n} greater than {v}."],
              c=nat(c), p=plural(t.name), s=nat(t.name), n=nat(n), v=qv(v))
    return q, f"SELECT {c} FROM {t.name} EXCEPT SELECT {c} FROM {t.name} WHERE {n} > {lit(v)}"


TEMPLATE_NAMES = list(TEMPLATES)


def _nonempty(con: sqlite3.Connection, sql: str) -> bool:
    rows = con.execute(sql).fetchmany(1)
    return bool(rows) and any(v is not None for v in rows[0])


def _examples(db: Db, con: sqlite3.Connection, n: int, rng: random.Random) -> list[dict]:
    ctx = Ctx(db, rng)
    out, seen = [], set()
    attempts = 0
    while len(out) < n and attempts < n * 30:
        attempts += 1
        name = rng.choice(TEMPLATE_NAMES)
        try:
            q, sql = TEMPLATES[name][1](ctx)
        except Skip:
            continue
        if q in seen:
            continue
        # Values are drawn from the rows, so nearly everything hits; retry what does not.
        if not _nonempty(con, sql) and rng.random() < 0.9:
            continue
        seen.add(q)
        out.append({"db_id": db.db_id, "question": q, "query": sql, "template": name})
    return out


# ----------------------------------------------------------------------------------------
# Database plan, writing, idempotency
# ----------------------------------------------------------------------------------------
def plan_databases(num_databases: int, num_dev_databases: int, seed: int) -> tuple[list[tuple[str, int]],
                                                                                   list[tuple[str, int]]]:
    """(domain, variant) lists for train and dev. Dev databases always come from domains that no
    training database uses; when more databases are asked for than there are domains, domains
    repeat as further variants (fewer tables/columns, other rows)."""
    doms = sorted(DOMAINS)
    random.Random(f"vantage-synthetic:{seed}:plan").shuffle(doms)
    n_dev_doms = min(num_dev_databases, len(doms) // 2)
    dev_doms, train_doms = doms[:n_dev_doms], doms[n_dev_doms:]

    def cycle(pool: list[str], k: int) -> list[tuple[str, int]]:
        return [(pool[i % len(pool)], 1 + i // len(pool)) for i in range(k)]

    train = cycle(train_doms, num_databases)
    dev = []
    if num_dev_databases:
        used = set(train)
        i = 0
        while len(dev) < num_dev_databases:  # further variants, never a train (domain, variant)
            cand = (dev_doms[i % len(dev_doms)], 1 + i // len(dev_doms))
            if cand not in used:
                dev.append(cand)
            i += 1
    return train, dev


def _params(num_databases, examples_per_db, num_dev_databases, seed, name_variation) -> dict:
    return {"num_databases": num_databases, "examples_per_db": examples_per_db,
            "num_dev_databases": num_dev_databases, "seed": seed, "name_variation": name_variation}


def _complete(out: Path, params: dict) -> bool:
    try:
        meta = json.loads((out / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if meta.get("version") != VERSION or meta.get("params") != params:
        return False
    if not all((out / f).is_file() for f in ("train.json", "dev.json", "tables.json")):
        return False
    return all((out / "database" / db / f"{db}.sqlite").is_file() for db in meta.get("databases", []))


def _build(tmp: Path, params: dict) -> dict:
    seed = params["seed"]
    train_plan, dev_plan = plan_databases(params["num_databases"], params["num_dev_databases"], seed)
    entries, splits = [], {"train": [], "dev": []}
    dbs = {"train": [], "dev": []}
    for split, plan in (("train", train_plan), ("dev", dev_plan)):
        for domain, variant in plan:
            db_id = f"{domain}_{variant}"
            rng = random.Random(f"vantage-synthetic:{seed}:{db_id}")
            db = _build_db(db_id, domain, variant, rng, seed=seed, name_variation=params["name_variation"])
            con = _write_sqlite(db, tmp / "database" / db_id / f"{db_id}.sqlite")
            try:
                splits[split].extend(_examples(db, con, params["examples_per_db"], rng))
            finally:
                con.close()
            entries.append(_tables_entry(db))
            dbs[split].append(db_id)

    def dump(name: str, obj) -> None:
        (tmp / name).write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")

    dump("tables.json", entries)
    dump("train.json", splits["train"])
    dump("dev.json", splits["dev"])
    meta = {"generator": "vantage-synthetic", "version": VERSION, "params": params,
            "databases": dbs["train"] + dbs["dev"], "train_databases": dbs["train"],
            "dev_databases": dbs["dev"],
            "counts": {"train": len(splits["train"]), "dev": len(splits["dev"])}}
    dump(META_FILE, meta)  # last: its presence marks a complete generation
    return meta


DEFAULT_NUM_DATABASES = 24


def generate_synthetic(out_dir: str | Path, *, num_databases: int = DEFAULT_NUM_DATABASES,
                       examples_per_db: int = 400, num_dev_databases: int = 2, seed: int = 0,
                       name_variation: float = 1.0) -> Path:
    """Write (or reuse) a synthetic dataset in the Spider layout at `out_dir`; return its path.

    `name_variation` (0..1) is the chance that a table or column of a variant beyond a domain's
    first is renamed from its synonym pool (0: every variant keeps the base names)."""
    if num_databases < 1 or num_dev_databases < 0 or examples_per_db < 1:
        raise DataError(f"synthetic data: need num_databases >= 1, num_dev_databases >= 0 and "
                        f"examples_per_db >= 1 (got {num_databases}, {num_dev_databases}, {examples_per_db})")
    if not 0.0 <= name_variation <= 1.0:
        raise DataError(f"synthetic data: name_variation must be in [0, 1], got {name_variation}")
    out = Path(out_dir).expanduser()
    params = _params(num_databases, examples_per_db, num_dev_databases, seed, float(name_variation))
    if _complete(out, params):
        return out
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / META_FILE).is_file())):
        raise DataError(f"{out}: exists and is not a synthetic dataset folder; refusing to overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        _build(tmp, params)
        old = None
        if out.exists():  # an older generation (other params/version) or an empty folder
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            try:
                os.rename(out, old / "data")
            except OSError:
                pass
        try:
            os.rename(tmp, out)
        except OSError:
            if not _complete(out, params):  # lost a race to another writer with other params
                raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _main(argv=None) -> int:

    ap = argparse.ArgumentParser(prog="python -m vantage_core.data.synthetic",
                                 description="Generate the synthetic text-to-SQL dataset (Spider layout).")
    ap.add_argument("out_dir")
    ap.add_argument("--num-databases", type=int, default=DEFAULT_NUM_DATABASES)
    ap.add_argument("--examples-per-db", type=int, default=400)
    ap.add_argument("--num-dev-databases", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name-variation", type=float, default=1.0)
    a = ap.parse_args(argv)
    out = generate_synthetic(a.out_dir, num_databases=a.num_databases, examples_per_db=a.examples_per_db,
                             num_dev_databases=a.num_dev_databases, seed=a.seed, name_variation=a.name_variation)
    splits = load_spider(out, source="synthetic")
    train_dbs = sorted({e.db_id for e in splits.train})
    dev_dbs = sorted({e.db_id for e in splits.dev})
    print(f"{out}: train {len(splits.train)} examples on {len(train_dbs)} databases ({', '.join(train_dbs)}); "
          f"dev {len(splits.dev)} examples on {len(dev_dbs)} databases ({', '.join(dev_dbs)})")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(_main))
