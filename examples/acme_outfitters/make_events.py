"""Write events.ndjson: one day (Thursday 2024-11-14, US Eastern) of webhooks from Acme Outfitters' Shopify store
and from AfterShip, built from the real sample payloads in tests/fixtures/real.

    .venv/bin/python examples/acme_outfitters/make_events.py [OUT]    # default: events.ndjson beside this file

Every Shopify payload is a deep copy of a real one (tests/fixtures/real/shopify/…) with ids, times, customers,
addresses, line items and totals replaced; every AfterShip payload is the real tracking object
(tests/fixtures/real/aftership/…) in AfterShip's webhook envelope, with its ids, carrier, status, estimates and
checkpoints replaced. Keys and their order are the real payloads'. Nothing is random at run time: one seeded
random.Random, so the file is the same byte for byte on every run.

Each line is an event as a webhook receiver would store it: {"id", "topic", "source", "received_at", "payload"}.
The day:
  - 28 orders placed (orders/create, #1101-#1128);
  - 9 of them shipped the same day (fulfillments/create, then orders/updated with fulfillment_status
    "fulfilled"), 3 of those picked up by the carrier in the evening (AfterShip InTransit);
  - 2 cancelled (orders/cancelled, then orders/updated), 1 partly cancelled (one unit refunded with
    restock_type "cancel", in orders/updated), 3 shipping addresses corrected and 2 orders tagged (orders/updated);
  - 16 parcels shipped on the two days before: AfterShip updates through the day (in transit, out for delivery,
    delivered; one late, one held by the weather, one failed delivery attempt), and Shopify's own
    fulfillments/update (out_for_delivery, delivered) for 8 of them.
"""

from __future__ import annotations

import copy
import json
import random
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REAL = HERE.parents[1] / "tests" / "fixtures" / "real"
OUT = HERE / "events.ndjson"
SEED = 20241114
EASTERN = timezone(timedelta(hours=-5))  # EST: 2024-11-14 is after the switch back from daylight time
DAY = datetime(2024, 11, 14, tzinfo=EASTERN)
SHOP = "acme-outfitters.myshopify.com"
TAX_RATE = Decimal("0.07")

# sku, title, variant title, price, grams
CATALOG = [
    ("ACME-TENT-2P", "Ridgeline 2-Person Tent", None, "249.00", 2400),
    ("ACME-BAG-20F-REG", "Summit 20°F Sleeping Bag", "Regular", "179.00", 1300),
    ("ACME-JKT-RAIN-M-BLU", "Stormshell Rain Jacket", "M / Blue", "129.00", 420),
    ("ACME-JKT-RAIN-L-BLK", "Stormshell Rain Jacket", "L / Black", "129.00", 450),
    ("ACME-BOOT-W9", "Trailhead Hiking Boot - Women's", "9", "159.00", 1100),
    ("ACME-BOOT-M11", "Trailhead Hiking Boot - Men's", "11", "159.00", 1250),
    ("ACME-SOCK-3PK-M", "Merino Hiking Socks (3 pack)", "M", "34.00", 210),
    ("ACME-BOTTLE-1L-SAGE", "Insulated Bottle 1 L", "Sage", "29.00", 450),
    ("ACME-HEADLAMP-400", "Beacon 400 Headlamp", None, "44.00", 90),
    ("ACME-PACK-45L", "Traverse 45 L Backpack", None, "199.00", 1600),
    ("ACME-STOVE-EMBER", "Ember Camp Stove", None, "59.00", 350),
    ("ACME-MUG-TI-450", "Titanium Mug 450 ml", None, "24.00", 80),
]

# first, last, address1, city, province, code, zip, phone
CUSTOMERS = [
    ("Maya", "Okafor", "418 Birch Hollow Rd", "Asheville", "North Carolina", "NC", "28801", "+18285550147"),
    ("Daniel", "Reyes", "77 Harbor View Dr", "Portland", "Maine", "ME", "04101", "+12075550193"),
    ("Priya", "Natarajan", "1520 Canyon Rim Ln", "Boulder", "Colorado", "CO", "80302", "+13035550112"),
    ("Tom", "Lindqvist", "9 Quarry St", "Burlington", "Vermont", "VT", "05401", "+18025550168"),
    ("Grace", "Whitfield", "2204 Elm Park Ave", "Madison", "Wisconsin", "WI", "53703", "+16085550121"),
    ("Luis", "Carvalho", "65 Sequoia Ct", "Bend", "Oregon", "OR", "97701", "+15415550175"),
    ("Hannah", "Becker", "310 Ridge Rd", "Bozeman", "Montana", "MT", "59715", "+14065550139"),
    ("Samuel", "Adeyemi", "1187 Lakeshore Blvd", "Duluth", "Minnesota", "MN", "55802", "+12185550154"),
    ("Emily", "Chen", "45 Pinecrest Way", "Flagstaff", "Arizona", "AZ", "86001", "+19285550186"),
    ("Noah", "Fitzgerald", "802 Summit Ave", "Chattanooga", "Tennessee", "TN", "37402", "+14235550107"),
    ("Olivia", "Marchetti", "19 Cedar Bluff Rd", "Lake Placid", "New York", "NY", "12946", "+15185550163"),
    ("Ethan", "Kowalski", "630 Trailhead Dr", "Missoula", "Montana", "MT", "59801", "+14065550198"),
    ("Ava", "Johansson", "2718 Aspen Grove Ln", "Salt Lake City", "Utah", "UT", "84105", "+18015550131"),
    ("Lucas", "Moreau", "54 Riverbend Rd", "Fayetteville", "Arkansas", "AR", "72701", "+14795550145"),
    ("Zoe", "Papadakis", "1402 Foothill Blvd", "Boise", "Idaho", "ID", "83702", "+12085550177"),
    ("Isaac", "Goldberg", "88 Granite St", "North Conway", "New Hampshire", "NH", "03860", "+16035550126"),
    ("Mia", "Tanaka", "3310 Spruce St", "Anchorage", "Alaska", "AK", "99503", "+19075550159"),
    ("Caleb", "Ortiz", "705 Mesa Verde Dr", "Santa Fe", "New Mexico", "NM", "87501", "+15055550184"),
    ("Lily", "Harrington", "12 Meadowlark Ln", "Jackson", "Wyoming", "WY", "83001", "+13075550115"),
    ("Jonah", "Abernathy", "940 Overlook Ter", "Roanoke", "Virginia", "VA", "24011", "+15405550142"),
]

# Shopify tracking_company, AfterShip slug, service, tracking URL
CARRIERS = [
    ("UPS", "ups", "UPS Ground", "https://www.ups.com/track?loc=en_US&tracknum={}"),
    ("USPS", "usps", "USPS Ground Advantage", "https://tools.usps.com/go/TrackConfirmAction?tLabels={}"),
    ("FedEx", "fedex", "FedEx Home Delivery", "https://www.fedex.com/fedextrack/?trknbr={}"),
]
HUBS = {
    "ups": ["Louisville, KY, US", "Hodgkins, IL, US", "Atlanta, GA, US"],
    "usps": ["Nashville, TN, US", "Columbus, OH, US", "Denver, CO, US"],
    "fedex": ["Memphis, TN, US", "Indianapolis, IN, US", "Dallas, TX, US"],
}


def real(name: str) -> Any:
    return json.loads((REAL / name).read_text(encoding="utf-8"))


def stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def money(amount: Decimal) -> str:
    return f"{amount.quantize(Decimal('0.01'))}"


def money_set(amount: Decimal) -> dict[str, Any]:
    text = money(amount)
    return {
        "shop_money": {"amount": text, "currency_code": "USD"},
        "presentment_money": {"amount": text, "currency_code": "USD"},
    }


@dataclass
class Shipment:
    fulfillment_id: int
    carrier: tuple[str, str, str, str]
    tracking: str
    shipped_at: datetime
    aftership_id: str


@dataclass
class Order:
    number: int
    payload: dict[str, Any]
    customer: tuple[str, ...]
    lines: list[dict[str, Any]] = field(default_factory=list)
    shipment: Shipment | None = None

    @property
    def id(self) -> int:
        return int(self.payload["id"])

    @property
    def name(self) -> str:
        return str(self.payload["name"])


class Day:
    def __init__(self) -> None:
        self.rng = random.Random(SEED)
        self.order_template = real("shopify/orders_cancelled_webhook.json")
        self.fulfillment_template = real("shopify/fulfillments_create_webhook.json")
        self.tracking_template = real("aftership/tracking_get_response.json")["data"]["tracking"]
        self.events: list[tuple[datetime, dict[str, Any]]] = []
        self.next_line_id = 14_871_230_001_000
        self.next_fulfillment_id = 5_412_870_010_000
        self.customer_ids: dict[str, int] = {}

    # --- ids -----------------------------------------------------------------------------------------------

    def hex_id(self, digits: int) -> str:
        return f"{self.rng.getrandbits(digits * 4):0{digits}x}"

    def tracking_number(self, slug: str) -> str:
        if slug == "ups":
            letters = "".join(self.rng.choice("0123456789ABCDEFGHJKLMNPRSTVWXYZ") for _ in range(6))
            return f"1Z{letters}03{self.rng.randrange(10**8):08d}"
        if slug == "usps":
            return f"9400111{self.rng.randrange(10**15):015d}"
        return f"{self.rng.randrange(10**11, 10**12)}"

    # --- Shopify orders ------------------------------------------------------------------------------------

    def order(
        self, number: int, placed: datetime, customer: tuple[str, ...], picks: list[tuple[int, int]]
    ) -> Order:
        first, last, address1, city, province, code, zip_code, phone = customer
        payload = copy.deepcopy(self.order_template)
        order_id = 6_120_450_000_000 + number * 7919
        token = self.hex_id(32)
        email = f"{first}.{last}@example.com".lower()
        address = dict(self.order_template["shipping_address"])
        address.update(
            first_name=first,
            last_name=last,
            name=f"{first} {last}",
            address1=address1,
            address2=None,
            city=city,
            province=province,
            province_code=code,
            zip=zip_code,
            country="United States",
            country_code="US",
            phone=phone,
            company=None,
        )
        customer_id = self.customer_ids.setdefault(
            email, 7_340_000_000_000 + len(self.customer_ids) * 104_729
        )
        lines = [self.line(index, quantity) for index, quantity in picks]
        subtotal = sum((Decimal(line["price"]) * line["quantity"] for line in lines), Decimal(0))
        express = self.rng.random() < 0.25
        shipping = Decimal("19.95") if express else (Decimal(0) if subtotal >= 100 else Decimal("7.95"))
        tax = (subtotal * TAX_RATE).quantize(Decimal("0.01"))
        total = subtotal + shipping + tax
        payload.update(
            id=order_id,
            admin_graphql_api_id=f"gid://shopify/Order/{order_id}",
            app_id=580111,
            browser_ip=f"198.51.100.{self.rng.randrange(2, 250)}",
            buyer_accepts_marketing=self.rng.random() < 0.4,
            cancel_reason=None,
            cancelled_at=None,
            cart_token=self.hex_id(32),
            checkout_token=self.hex_id(32),
            confirmation_number="".join(
                self.rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ123456789") for _ in range(9)
            ),
            confirmed=True,
            contact_email=email,
            created_at=stamp(placed),
            current_shipping_price_set=money_set(shipping),
            current_subtotal_price=money(subtotal),
            current_subtotal_price_set=money_set(subtotal),
            current_total_discounts="0.00",
            current_total_discounts_set=money_set(Decimal(0)),
            current_total_price=money(total),
            current_total_price_set=money_set(total),
            current_total_tax=money(tax),
            current_total_tax_set=money_set(tax),
            email=email,
            financial_status="paid",
            fulfillment_status=None,
            merchant_business_entity_id="MTcyNDUwMTIz",
            name=f"#{number}",
            number=number - 1000,
            order_number=number,
            order_status_url=f"https://{SHOP}/72450123/orders/{token}/authenticate?key={self.hex_id(32)}",
            payment_gateway_names=["shopify_payments"],
            processed_at=stamp(placed),
            source_name="web",
            subtotal_price=money(subtotal),
            subtotal_price_set=money_set(subtotal),
            tags="",
            tax_lines=[
                {
                    "price": money(tax),
                    "rate": float(TAX_RATE),
                    "title": "State Tax",
                    "price_set": money_set(tax),
                    "channel_liable": False,
                }
            ],
            test=False,
            token=token,
            total_discounts="0.00",
            total_discounts_set=money_set(Decimal(0)),
            total_line_items_price=money(subtotal),
            total_line_items_price_set=money_set(subtotal),
            total_outstanding="0.00",
            total_price=money(total),
            total_price_set=money_set(total),
            total_shipping_price_set=money_set(shipping),
            total_tax=money(tax),
            total_tax_set=money_set(tax),
            total_weight=sum(line["grams"] * line["quantity"] for line in lines),
            updated_at=stamp(placed),
            billing_address=dict(address),
            shipping_address=dict(address),
            line_items=lines,
        )
        customer_block = payload["customer"]
        customer_block.update(
            id=customer_id,
            created_at=stamp(placed - timedelta(days=self.rng.randrange(1, 900))),
            updated_at=stamp(placed),
            first_name=first,
            last_name=last,
            state="enabled",
            email=email,
            phone=phone,
            admin_graphql_api_id=f"gid://shopify/Customer/{customer_id}",
        )
        default = dict(address)
        default.update(
            id=customer_id + 1, customer_id=customer_id, country_name="United States", default=True
        )
        default.pop("latitude", None)
        default.pop("longitude", None)
        customer_block["default_address"] = default
        shipping_line = payload["shipping_lines"][0]
        shipping_line.update(
            id=order_id + 11,
            code="EXPRESS" if express else "STANDARD",
            title="Express (2 business days)" if express else "Standard (3-5 business days)",
            price=money(shipping),
            price_set=money_set(shipping),
            discounted_price=money(shipping),
            discounted_price_set=money_set(shipping),
            current_discounted_price_set=money_set(shipping),
        )
        return Order(number, payload, customer, lines)

    def line(self, index: int, quantity: int) -> dict[str, Any]:
        sku, title, variant, price, grams = CATALOG[index]
        line = copy.deepcopy(self.order_template["line_items"][0])
        self.next_line_id += 137
        product_id = 8_204_330_000_000 + index * 1_009
        line.update(
            id=self.next_line_id,
            admin_graphql_api_id=f"gid://shopify/LineItem/{self.next_line_id}",
            attributed_staffs=[],
            current_quantity=quantity,
            fulfillable_quantity=quantity,
            grams=grams,
            name=f"{title} - {variant}" if variant else title,
            price=price,
            price_set=money_set(Decimal(price)),
            product_id=product_id,
            quantity=quantity,
            sku=sku,
            title=title,
            variant_id=product_id + 700_000_000,
            variant_inventory_management="shopify",
            variant_title=variant,
            vendor="Acme Outfitters",
        )
        return line

    def random_order(
        self, number: int, placed: datetime, picks: list[tuple[int, int]] | None = None
    ) -> Order:
        customer = CUSTOMERS[(number * 7) % len(CUSTOMERS)]
        if picks is None:
            indexes = self.rng.sample(range(len(CATALOG)), self.rng.choice([1, 1, 2, 2, 3]))
            # Cheap things are often bought two at a time.
            picks = [
                (i, 2 if Decimal(CATALOG[i][3]) < 50 and self.rng.random() < 0.5 else 1) for i in indexes
            ]
        return self.order(number, placed, customer, picks)

    def updated(self, order: Order, at: datetime) -> dict[str, Any]:
        order.payload["updated_at"] = stamp(at)
        return copy.deepcopy(order.payload)

    # --- Shopify fulfillments ------------------------------------------------------------------------------

    def ship(self, order: Order, at: datetime) -> Shipment:
        carrier = self.rng.choice(CARRIERS)
        self.next_fulfillment_id += 3_331
        shipment = Shipment(
            self.next_fulfillment_id, carrier, self.tracking_number(carrier[1]), at, self.hex_id(24)
        )
        order.shipment = shipment
        return shipment

    def fulfillment(self, order: Order, at: datetime, shipment_status: str | None) -> dict[str, Any]:
        assert order.shipment is not None
        shipment = order.shipment
        company, _, _, url = shipment.carrier
        payload = copy.deepcopy(self.fulfillment_template)
        lines = []
        for line in order.lines:
            item = copy.deepcopy(self.fulfillment_template["line_items"][0])
            for key in item:
                if key in line:
                    item[key] = copy.deepcopy(line[key])
            item["fulfillable_quantity"] = 0
            item["fulfillment_status"] = "fulfilled"
            lines.append(item)
        payload.update(
            id=shipment.fulfillment_id,
            order_id=order.id,
            status="success",
            created_at=stamp(shipment.shipped_at),
            service="manual",
            updated_at=stamp(at),
            tracking_company=company,
            shipment_status=shipment_status,
            location_id=71_650_000_123,
            email=order.payload["email"],
            destination=copy.deepcopy(order.payload["shipping_address"]),
            tracking_number=shipment.tracking,
            tracking_numbers=[shipment.tracking],
            tracking_url=url.format(shipment.tracking),
            tracking_urls=[url.format(shipment.tracking)],
            name=f"{order.name}.1",
            admin_graphql_api_id=f"gid://shopify/Fulfillment/{shipment.fulfillment_id}",
            line_items=lines,
        )
        return payload

    # --- AfterShip -----------------------------------------------------------------------------------------

    def tracking(
        self, order: Order, at: datetime, tag: str, subtag: str, message: str, *, eta: datetime, promised: str
    ) -> dict[str, Any]:
        assert order.shipment is not None
        shipment = order.shipment
        _, slug, service, url = shipment.carrier
        tracking = copy.deepcopy(self.tracking_template)
        hubs = HUBS[slug]
        city = order.customer[2]
        steps = [
            (
                shipment.shipped_at,
                "InfoReceived",
                "InfoReceived_001",
                "Shipping label created",
                "Acme DC, Columbus, OH, US",
            ),
            (
                shipment.shipped_at + timedelta(hours=5),
                "InTransit",
                "InTransit_002",
                "Picked up",
                "Columbus, OH, US",
            ),
            (
                shipment.shipped_at + timedelta(hours=14),
                "InTransit",
                "InTransit_007",
                "Departed facility",
                hubs[0],
            ),
        ]
        if tag in ("OutForDelivery", "Delivered", "AttemptFail") or tag == "Exception":
            steps.append(
                (
                    at - timedelta(hours=3),
                    "InTransit",
                    "InTransit_003",
                    "Arrived at local facility",
                    f"{city}, US",
                )
            )
        steps.append((at, tag, subtag, message, f"{city}, US"))
        template_checkpoint = self.tracking_template["checkpoints"][0]
        checkpoints = []
        for moment, step_tag, step_subtag, step_message, location in steps:
            if moment > at:
                continue
            checkpoint = copy.deepcopy(template_checkpoint)
            checkpoint.update(
                slug=slug,
                city=location.split(",")[0],
                created_at=utc(moment + timedelta(minutes=4)),
                location=location,
                country_name="United States",
                message=step_message,
                country_iso3="USA",
                tag=step_tag,
                subtag=step_subtag,
                subtag_message=step_message,
                checkpoint_time=stamp(moment),
                raw_tag=step_subtag.upper(),
            )
            checkpoints.append(checkpoint)
        delivered = tag == "Delivered"
        estimate = {
            "type": "specific",
            "source": "AfterShip EDD",
            "datetime": stamp(eta),
            "datetime_min": None,
            "datetime_max": None,
        }
        tracking.update(
            id=shipment.aftership_id,
            created_at=utc(shipment.shipped_at + timedelta(minutes=2)),
            updated_at=utc(at + timedelta(minutes=4)),
            last_updated_at=utc(at + timedelta(minutes=4)),
            tracking_number=shipment.tracking,
            slug=slug,
            active=not delivered,
            custom_fields={
                "fulfillment_id": str(shipment.fulfillment_id),
                "items": ",".join(f"{line['sku']}:{line['quantity']}" for line in order.lines),
            },
            customer_name=f"{order.customer[0]} {order.customer[1]}",
            delivery_time=(at.date() - shipment.shipped_at.date()).days if delivered else None,
            destination_country_iso3="USA",
            courier_destination_country_iso3="USA",
            emails=[order.payload["email"]],
            order_id=str(order.id),
            order_number=order.name,
            order_date=stamp(datetime.fromisoformat(order.payload["created_at"])),
            origin_country_iso3="USA",
            shipment_pickup_date=stamp(shipment.shipped_at + timedelta(hours=5)),
            shipment_delivery_date=stamp(at) if delivered else None,
            shipment_type=service,
            shipment_weight=round(order.payload["total_weight"] / 1000, 2),
            signed_by=order.customer[1].upper() if delivered else None,
            source="shopify",
            tag=tag,
            subtag=subtag,
            subtag_message=message,
            title=order.name,
            order_promised_delivery_date=promised,
            delivery_type="door_to_door",
            pickup_location=None,
            destination_raw_location=f"{city}, {order.customer[5]}, US",
            shipment_tags=[],
            next_couriers=[],
            courier_tracking_link=url.format(shipment.tracking),
            courier_redirect_link=url.format(shipment.tracking),
            first_attempted_at=stamp(at) if tag in ("Delivered", "AttemptFail") else None,
            custom_estimated_delivery_date=None,
            first_estimated_delivery=dict(
                estimate, source="Carrier EDD", datetime=f"{promised}T20:00:00-05:00"
            ),
            latest_estimated_delivery=estimate,
            transit_time=(at.date() - shipment.shipped_at.date()).days if delivered else None,
            checkpoints=checkpoints,
        )
        tracking["return_to_sender"] = False
        return {
            "event": "tracking_update",
            "event_id": f"{self.hex_id(8)}-{self.hex_id(4)}-4{self.hex_id(3)}-8{self.hex_id(3)}-{self.hex_id(12)}",
            "is_tracking_first_tag": tag != "InTransit",
            "msg": tracking,
            "ts": int(at.timestamp()),
        }

    # --- the day -------------------------------------------------------------------------------------------

    def emit(self, at: datetime, topic: str, payload: dict[str, Any]) -> None:
        source = "aftership" if topic.startswith("aftership/") else "shopify"
        event = {
            "id": f"{source}-{self.hex_id(8)}-{self.hex_id(4)}-{self.hex_id(4)}-{self.hex_id(12)}",
            "topic": topic,
            "source": source,
            "shop": SHOP,
            "received_at": utc(at + timedelta(seconds=self.rng.randrange(1, 4))),
            "payload": payload,
        }
        self.events.append((at, event))

    def at(self, hour: int, minute: int) -> datetime:
        return DAY + timedelta(hours=hour, minutes=minute, seconds=self.rng.randrange(60))

    def build(self) -> list[dict[str, Any]]:
        self.past_shipments()
        self.todays_orders()
        self.events.sort(key=lambda item: item[0])
        return [event for _, event in self.events]

    def past_shipments(self) -> None:
        """Orders #1081-#1096, placed and shipped on the two days before: only their parcels move today."""
        for n in range(16):
            placed = DAY - timedelta(days=2) + timedelta(hours=8 + n % 12, minutes=7 * n)
            order = self.random_order(1081 + n, placed)
            self.ship(order, DAY - timedelta(days=1) + timedelta(hours=14, minutes=3 * n))
            promised = (DAY + timedelta(days=1 if n < 12 else 2)).date().isoformat()
            eta_today = DAY + timedelta(hours=20)
            track = self.tracking
            start = self.at(5 + n % 3, 2 + n * 3)
            self.emit(
                start,
                "aftership/tracking_update",
                track(
                    order,
                    start,
                    "InTransit",
                    "InTransit_007",
                    "Departed facility",
                    eta=eta_today,
                    promised=promised,
                ),
            )
            if n < 10:  # delivered today
                out = self.at(8 + n % 3, 5 + n * 5)
                done = self.at(11 + n % 8, (n * 13) % 60)
                self.emit(
                    out,
                    "aftership/tracking_update",
                    track(
                        order,
                        out,
                        "OutForDelivery",
                        "OutForDelivery_001",
                        "Out for delivery",
                        eta=eta_today,
                        promised=promised,
                    ),
                )
                self.emit(
                    done,
                    "aftership/tracking_update",
                    track(
                        order,
                        done,
                        "Delivered",
                        "Delivered_001",
                        "Delivered, front door",
                        eta=done,
                        promised=promised,
                    ),
                )
                if n < 8:  # Shopify's carrier-calculated status arrives too
                    if n < 5:
                        self.emit(
                            out + timedelta(minutes=6),
                            "fulfillments/update",
                            self.fulfillment(order, out + timedelta(minutes=6), "out_for_delivery"),
                        )
                    self.emit(
                        done + timedelta(minutes=7),
                        "fulfillments/update",
                        self.fulfillment(order, done + timedelta(minutes=7), "delivered"),
                    )
            elif n == 10:  # the carrier's estimate slips past the promised day: late
                late = self.at(13, 40)
                self.emit(
                    late,
                    "aftership/tracking_update",
                    track(
                        order,
                        late,
                        "InTransit",
                        "InTransit_003",
                        "Arrived at local facility",
                        eta=DAY + timedelta(days=4, hours=20),
                        promised=promised,
                    ),
                )
            elif n == 11:  # held by the weather: a delay exception
                held = self.at(15, 10)
                self.emit(
                    held,
                    "aftership/tracking_update",
                    track(
                        order,
                        held,
                        "Exception",
                        "Exception_005",
                        "Delayed (weather conditions)",
                        eta=DAY + timedelta(days=2, hours=20),
                        promised=promised,
                    ),
                )
            elif n == 12:  # nobody home
                missed = self.at(16, 25)
                self.emit(
                    missed,
                    "aftership/tracking_update",
                    track(
                        order,
                        missed,
                        "AttemptFail",
                        "AttemptFail_001",
                        "Delivery attempted, no one available",
                        eta=DAY + timedelta(days=1, hours=20),
                        promised=promised,
                    ),
                )

    def todays_orders(self) -> None:
        placed_times = sorted(self.at(6 + (i * 17) // 28, (i * 37) % 60) for i in range(28))
        # #1115 is bought with two packs of socks: one is cancelled later.
        orders = [
            self.random_order(1101 + i, placed, [(6, 2), (7, 1)] if i == 14 else None)
            for i, placed in enumerate(placed_times)
        ]
        for order, placed in zip(orders, placed_times, strict=True):
            self.emit(placed, "orders/create", copy.deepcopy(order.payload))
        # Nine shipped the same day (the early ones), three picked up in the evening.
        for i, order in enumerate(orders[:9]):
            shipped = max(
                self.at(10 + i, 15), datetime.fromisoformat(order.payload["created_at"]) + timedelta(hours=2)
            )
            self.ship(order, shipped)
            self.emit(shipped, "fulfillments/create", self.fulfillment(order, shipped, None))
            order.payload["fulfillment_status"] = "fulfilled"
            for line in order.payload["line_items"]:
                line.update(fulfillable_quantity=0, fulfillment_status="fulfilled")
            self.emit(
                shipped + timedelta(seconds=2),
                "orders/updated",
                self.updated(order, shipped + timedelta(seconds=2)),
            )
            if i < 3:
                pickup = self.at(19 + i, 30)
                self.emit(
                    pickup,
                    "aftership/tracking_update",
                    self.tracking(
                        order,
                        pickup,
                        "InTransit",
                        "InTransit_002",
                        "Picked up",
                        eta=DAY + timedelta(days=3, hours=20),
                        promised=(DAY + timedelta(days=4)).date().isoformat(),
                    ),
                )
        # Two cancelled: orders/cancelled, then the orders/updated Shopify sends with it.
        for order, reason, hour in ((orders[11], "customer", 14), (orders[18], "inventory", 18)):
            when = self.at(hour, 5)
            order.payload.update(cancelled_at=stamp(when), cancel_reason=reason, financial_status="refunded")
            for line in order.payload["line_items"]:
                line.update(current_quantity=0, fulfillable_quantity=0)
            self.emit(when, "orders/cancelled", self.updated(order, when))
            self.emit(
                when + timedelta(seconds=3),
                "orders/updated",
                self.updated(order, when + timedelta(seconds=3)),
            )
        # One partly cancelled: a unit of its first line refunded before shipping (restock_type "cancel").
        partial = orders[14]
        first = partial.payload["line_items"][0]
        first.update(current_quantity=1, fulfillable_quantity=1)
        when = self.at(16, 45)
        partial.payload.update(financial_status="partially_refunded")
        partial.payload["refunds"] = [
            {
                "id": partial.id + 31,
                "order_id": partial.id,
                "created_at": stamp(when),
                "note": "Customer asked to remove one unit before shipping",
                "restock": True,
                "refund_line_items": [
                    {
                        "id": partial.id + 37,
                        "line_item_id": first["id"],
                        "quantity": 1,
                        "restock_type": "cancel",
                        "location_id": 71_650_000_123,
                    }
                ],
            }
        ]
        self.emit(when, "orders/updated", self.updated(partial, when))
        # Three shipping addresses corrected, two orders tagged: plain orders/updated.
        for order, hour in ((orders[9], 12), (orders[16], 17), (orders[21], 21)):
            when = self.at(hour, 20)
            order.payload["shipping_address"]["address2"] = f"Apt {self.rng.randrange(2, 40)}"
            self.emit(when, "orders/updated", self.updated(order, when))
        for order, hour in ((orders[4], 13), (orders[23], 22)):
            when = self.at(hour, 50)
            order.payload["tags"] = "VIP, wholesale-review"
            self.emit(when, "orders/updated", self.updated(order, when))


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    events = Day().build()
    with out.open("w", encoding="utf-8", newline="\n") as handle:
        for event in events:
            handle.write(json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n")
    topics: dict[str, int] = {}
    for event in events:
        topics[event["topic"]] = topics.get(event["topic"], 0) + 1
    print(f"wrote {len(events)} events to {out}")
    for topic, count in sorted(topics.items()):
        print(f"  {topic:28} {count}")


if __name__ == "__main__":
    main()
